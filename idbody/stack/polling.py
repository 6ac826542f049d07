"""Wait for something observable, with a deadline and no fixed sleeps: the one polling loop of the
local stack, its launcher and the test suite.

Example::

    until(lambda: server.answers(), 30, "the gateway to answer /healthz")
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def until(predicate: Callable[[], T], deadline_s: float, what: str, interval_s: float = 0.05) -> T:
    """Call ``predicate`` until it returns something truthy (returned) or ``deadline_s`` passes
    (TimeoutError naming ``what``). A predicate that raises stops the wait with its exception."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {deadline_s:g}s waiting for {what}")
        time.sleep(interval_s)


def answers(call: Callable[[], Any], *errors: type[BaseException]) -> Any:
    """``call()``, or None when it raises one of ``errors`` (a server that is not up yet)."""
    try:
        return call()
    except errors:
        return None
