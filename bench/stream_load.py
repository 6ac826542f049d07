"""The gateway bench's event-stream phase: open N job event streams and hold them, then time other
clients' status GETs and submits against the same calls with no stream open.

Streams are raw asyncio connections (a few KB each in this process) spread over queued jobs, so
they stay open on keep-alive comments; a stream the gateway refuses (its caps: 503 streams_full,
429 too_many_streams, or uvicorn's connection cap) is counted and closed.

Example::

    rows = bench_streams("http://127.0.0.1:8000", queued_ids, image, counts=(1000, 5000))
"""

from __future__ import annotations

import asyncio
import statistics
import time
from urllib.parse import urlsplit

import httpx

from api.serve import raise_open_files_limit
from bench.raw_http import RawConnection

FIELDS = {"body_type": "athletic", "height_cm": "170", "weight_kg": "65", "gender": "female", "num_images": "1"}
SUBMIT = "/api/v1/generate-identity-body"
OPEN_AT_ONCE = 200


async def _open_stream(host: str, port: int, request_id: str) -> tuple[int, asyncio.StreamWriter | None]:
    """(status, the open connection when 200). Reads the head and the first event."""
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return 0, None
    writer.write(f"GET /api/v1/jobs/{request_id}/events HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
        status = int(head.split(b" ", 2)[1])
        if status == 200:
            await asyncio.wait_for(reader.readuntil(b"\n\n"), 60)  # the first event
            return 200, writer
    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, asyncio.LimitOverrunError, ValueError):
        status = 0
    writer.close()
    return status, None


async def _timed_status(base: str, request_id: str, count: int) -> list[float]:
    url = urlsplit(base)
    times = []
    async with await RawConnection.open(url.hostname, url.port) as conn:
        for _ in range(count):
            t0 = time.perf_counter()
            status, _ = await conn.get(f"/api/v1/jobs/{request_id}")
            times.append(time.perf_counter() - t0)
            if status != 200:
                raise RuntimeError(f"status GET answered {status}")
    return times


async def _timed_submits(base: str, image: bytes, count: int) -> list[float]:
    times = []
    async with httpx.AsyncClient(timeout=120) as client:
        for _ in range(count):
            t0 = time.perf_counter()
            resp = await client.post(base + SUBMIT, data=FIELDS, files={"face_image": ("p.jpg", image, "image/jpeg")})
            times.append(time.perf_counter() - t0)
            if resp.status_code != 202:
                raise RuntimeError(f"submit answered {resp.status_code}: {resp.text[:200]}")
    return times


def _ms(values: list[float]) -> dict:
    ordered = sorted(values)
    return {"median_ms": round(statistics.median(ordered) * 1000, 2),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * (len(ordered) - 1)))] * 1000, 2)}


async def _phase(base: str, ids: list[str], image: bytes, count: int, gets: int, submits: int) -> dict:
    url = urlsplit(base)
    idle_status, idle_submit = await _timed_status(base, ids[0], gets), await _timed_submits(base, image, submits)
    started = time.perf_counter()
    results: list[tuple[int, asyncio.StreamWriter | None]] = []
    for first in range(0, count, OPEN_AT_ONCE):
        batch = range(first, min(count, first + OPEN_AT_ONCE))
        results += await asyncio.gather(*(_open_stream(url.hostname, url.port, ids[i % len(ids)]) for i in batch))
    opened = [w for s, w in results if w is not None]
    refused: dict[str, int] = {}
    for status, writer in results:
        if writer is None:
            refused[str(status)] = refused.get(str(status), 0) + 1
    open_s = time.perf_counter() - started
    try:
        busy_status = await _timed_status(base, ids[0], gets)
        busy_submit = await _timed_submits(base, image, submits)
        healthy = httpx.get(base + "/healthz", timeout=60).status_code == 200
    finally:
        for writer in opened:
            writer.close()
    row = {
        "streams_asked": count, "streams_open": len(opened), "refused_by_status": refused,
        "seconds_to_open": round(open_s, 2), "healthz_while_open": healthy,
        "status_idle": _ms(idle_status), "status_with_streams": _ms(busy_status),
        "submit_idle": _ms(idle_submit), "submit_with_streams": _ms(busy_submit),
    }
    row["submit_ratio"] = round(row["submit_with_streams"]["median_ms"] / row["submit_idle"]["median_ms"], 2)
    return row


def bench_streams(base: str, ids: list[str], image: bytes, counts: tuple[int, ...] = (1000, 5000),
                  gets: int = 200, submits: int = 20) -> list[dict]:
    """One row per stream count; ``ids`` are queued jobs (no worker takes them meanwhile)."""
    raise_open_files_limit(max(counts) + 1024)
    rows = []
    for count in counts:
        rows.append(asyncio.run(_phase(base, ids, image, count, gets, submits)))
        time.sleep(2)  # the gateway notices the closed streams before the next phase
    return rows


def print_streams(rows: list[dict]) -> None:
    print(f"\n{'streams asked':>14}{'open':>7}{'refused':>22}{'status idle':>13}{'with streams':>14}"
          f"{'submit idle':>13}{'with streams':>14}{'ratio':>7}")
    for r in rows:
        refused = ", ".join(f"{k}: {v}" for k, v in r["refused_by_status"].items()) or "-"
        print(f"{r['streams_asked']:>14}{r['streams_open']:>7}{refused:>22}{r['status_idle']['median_ms']:>13}"
              f"{r['status_with_streams']['median_ms']:>14}{r['submit_idle']['median_ms']:>13}"
              f"{r['submit_with_streams']['median_ms']:>14}{r['submit_ratio']:>7}")
    print("(medians in ms; status GETs on one kept-alive connection, submits one at a time)")
