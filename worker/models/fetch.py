"""One URL streamed into one file, resumed with an HTTP ``Range`` request when a partial file is
already there, with a tqdm byte bar. Used for release archives that do not live on a model hub.

Example::

    fetch("https://example.org/pack.zip", Path("models/.downloads/pack.zip.part"), expected_size=1234)
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from shared.errors import ErrorCode, IdentityBodyError

CHUNK_BYTES = 1 << 20


def fetch(
    url: str,
    dest: Path,
    *,
    expected_size: int | None = None,
    progress: bool = True,
    desc: str | None = None,
    timeout_s: float = 60.0,
) -> int:
    """Download ``url`` into ``dest``, continuing a partial ``dest``; return its size in bytes.

    A server that ignores ``Range`` (plain 200) restarts the file from zero; 416 means there is
    nothing left to fetch. The caller checks the checksum: this function only moves bytes.
    """
    import httpx
    from tqdm.auto import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    have = dest.stat().st_size if dest.is_file() else 0
    if expected_size is not None and have > expected_size:
        dest.unlink()  # longer than the real file: it cannot be a prefix of it
        have = 0
    if expected_size is not None and have == expected_size:
        return have
    # identity: a compressed body would make byte offsets meaningless for the next resume
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        with httpx.Client(follow_redirects=True, timeout=timeout_s) as client:
            with client.stream("GET", url, headers=headers) as response:
                if response.status_code == 416 and have:
                    return have
                if response.status_code not in (200, 206):
                    raise IdentityBodyError(
                        ErrorCode.MODEL_DOWNLOAD_FAILED,
                        f"Downloading {url} failed with HTTP {response.status_code}. "
                        "Check the address and your network, then run the command again.",
                    )
                resumed = response.status_code == 206
                start = have if resumed else 0
                length = response.headers.get("Content-Length")
                total = start + int(length) if length is not None else expected_size
                with open(dest, "ab" if resumed else "wb") as out, tqdm(
                    total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                    desc=desc or dest.name, disable=not progress,
                ) as bar:
                    for chunk in response.iter_bytes(CHUNK_BYTES):
                        out.write(chunk)
                        bar.update(len(chunk))
    except httpx.HTTPError as exc:
        raise IdentityBodyError(
            ErrorCode.MODEL_DOWNLOAD_FAILED,
            f"Downloading {url} was interrupted ({exc}). The part already fetched is kept in "
            f"{dest}; run the same command again to resume.",
        ) from exc
    return dest.stat().st_size


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks so multi-GB weights never sit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()
