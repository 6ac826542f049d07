"""The ``Prefer`` request header (RFC 7240), as far as the gateway honours it: ``wait=N``, and a
bare ``wait`` (Replicate's idiom) meaning "as long as you allow".

Example::

    wait_seconds("respond-async, wait=30", max_wait_s=60)   # 30
    wait_seconds("wait=600", max_wait_s=60)                 # 60 (clamped)
    wait_seconds("wait", max_wait_s=60)                     # 60
"""

from __future__ import annotations


def wait_seconds(header: str | None, max_wait_s: int) -> int | None:
    """N from ``wait=N`` clamped to ``max_wait_s`` (a bare ``wait``: ``max_wait_s``); None when
    absent, malformed or not positive."""
    if not header:
        return None
    for preference in header.split(","):
        name, equals, value = preference.split(";", 1)[0].strip().partition("=")
        if name.strip().lower() != "wait":
            continue
        if not equals:
            return max_wait_s if max_wait_s > 0 else None
        value = value.strip().strip('"')
        if not value.isdigit():
            return None
        wait = min(int(value), max_wait_s)
        return wait if wait > 0 else None
    return None
