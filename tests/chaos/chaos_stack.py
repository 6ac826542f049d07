"""What the chaos tests share: hostile files made in memory, the gateway's memory read from /proc,
a beat-running io worker, and waiting for many jobs at once.

Example::

    png = rgba16_png_claiming(6320, 6320)            # ~1 KB on disk, 160 MB if decoded
    reset_peak(pid); ...; peak_mb(pid) - rss_mb(pid)  # what one request cost the gateway
"""

from __future__ import annotations

import io
import struct
import time
import zlib

import httpx
from PIL import Image

from shared.jobs.record import JobRecord
from shared.jobs.store import JobStore

SUBMIT = "/api/v1/generate-identity-body"
# the smallest real job: one 64x64 image, two denoise steps on the tiny profile
QUICK_JOB = {"num_images": "1", "width": "64", "height": "64", "num_inference_steps": "2"}


def rgba16_png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header says ``width`` x ``height`` 16-bit RGBA, with only a few rows of data:
    small on disk, and what a decoder allocates for the whole frame before it finds the end."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress((b"\0" + b"\0" * (width * 8)) * 4, 9)
    header = struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def jpeg_claiming(width: int, height: int) -> bytes:
    """A valid 16x16 JPEG whose frame header (SOF0) is rewritten to claim ``width`` x ``height``."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (128, 128, 128)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def _status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def rss_mb(pid: int) -> float:
    return _status_kb(pid, "VmRSS") / 1024


def peak_mb(pid: int) -> float:
    """The process's peak resident set since the last ``reset_peak``."""
    return _status_kb(pid, "VmHWM") / 1024


def reset_peak(pid: int) -> None:
    """Start a new peak-RSS window (Linux: writing 5 to clear_refs resets VmHWM to VmRSS)."""
    with open(f"/proc/{pid}/clear_refs", "w") as fh:
        fh.write("5")


def submit(base_url: str, image: bytes, headers: dict | None = None, timeout_s: float = 60,
           **fields: str) -> httpx.Response:
    files = {"face_image": ("face.jpg", image, "image/jpeg")}
    return httpx.post(base_url + SUBMIT, data={**QUICK_JOB, **fields}, files=files, headers=headers or {},
                      timeout=timeout_s)


def unfinished(store: JobStore, request_ids: list[str]) -> list[str]:
    """The ids whose record is missing or not finished yet."""
    out = []
    for rid in request_ids:
        record = store.get(rid)
        if record is None or not record.status.finished:
            out.append(rid)
    return out


def records(store: JobStore, request_ids: list[str]) -> list[JobRecord]:
    found = [store.get(rid) for rid in request_ids]
    assert all(r is not None for r in found), "an accepted job's record is gone"
    return found  # type: ignore[return-value]


def uploads_left(storage, prefix: str = "") -> list[str]:
    listing = storage.client.list_objects_v2(Bucket=storage.uploads_bucket, Prefix=prefix)
    return [o["Key"] for o in listing.get("Contents", [])]


class Stopwatch:
    """Seconds since it was made; the tests print what they measured (the README's table)."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def __call__(self) -> float:
        return time.monotonic() - self.start
