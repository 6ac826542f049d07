"""Server-sent events of one job: the status JSON each time it changes, read from the job record,
until the job has finished.

The stream reads the record (one pipelined Redis round trip) every ``poll_s`` seconds and sends an
``event: status`` whenever the status JSON differs from the last one sent: the queue position
while queued, stage, step and ETA while running, then the finished status, after which it ends.
A comment line every ``keepalive_s`` keeps proxies from closing a quiet stream. A stream ends
after ``max_s`` even if the job has not (so a server shutting down is not held open by it); the
client opens it again.

Example::

    curl -N http://127.0.0.1:8000/api/v1/jobs/$ID/events
    # event: status
    # data: {"request_id": "...", "status": "running", "progress": {"step": 3, "total": 8, ...}}
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
from starlette.concurrency import run_in_threadpool

from shared.errors import ErrorCode
from shared.jobs.store import JobStore
from shared.jobs.views import status_view

POLL_S = 0.25
KEEPALIVE_S = 15.0
MAX_S = 600.0
FINISHED = ("succeeded", "failed", "canceled")


def sse(event: str, data: dict[str, Any], event_id: int | None = None) -> str:
    """One server-sent event.

    Example::

        sse("status", {"status": "queued"}, 1)   # 'id: 1\\nevent: status\\ndata: {"status": "queued"}\\n\\n'
    """
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def status_events(
    store: JobStore,
    request_id: str,
    base_url: str,
    first: dict[str, Any],
    disconnected: Callable[[], Awaitable[bool]],
    poll_s: float = POLL_S,
    keepalive_s: float = KEEPALIVE_S,
    max_s: float = MAX_S,
) -> AsyncIterator[str]:
    """The event stream of one job, starting from its status JSON ``first``."""
    view: dict[str, Any] | None = first
    sent: dict[str, Any] | None = None
    count, last_write = 0, time.monotonic()
    deadline = last_write + max_s
    while time.monotonic() < deadline:
        if view is None:  # deleted or expired while watched
            yield sse("error", {"error": {"code": ErrorCode.JOB_NOT_FOUND.value,
                                          "message": "The job was deleted or has expired."}})
            return
        if view != sent:
            count += 1
            yield sse("status", view, count)
            sent, last_write = view, time.monotonic()
            if view["status"] in FINISHED:
                return
        elif time.monotonic() - last_write >= keepalive_s:
            yield ": keep-alive\n\n"
            last_write = time.monotonic()
        await anyio.sleep(poll_s)
        if await disconnected():
            return
        record, position = await run_in_threadpool(store.get_with_position, request_id)
        view = None if record is None else status_view(record, base_url, position)
