"""Server-sent events of one job: the status JSON each time it changes, read from the job record,
until the job has finished.

The stream waits on the process's job watcher (``api.job_watch``: one batched read of all watched
jobs every 0.25 s) and sends an ``event: status`` whenever the status JSON differs from the last
one sent: the queue position while queued, stage, step and ETA while running, then the finished
status, after which it ends. A comment line every ``keepalive_s`` keeps proxies from closing a
quiet stream. A stream ends after ``max_s`` even if the job has not (so a server shutting down is
not held open by it); the client opens it again. A stream holds no thread while it waits.

Example::

    curl -N http://127.0.0.1:8000/api/v1/jobs/$ID/events
    # event: status
    # data: {"request_id": "...", "status": "running", "progress": {"step": 3, "total": 8, ...}}
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from api.job_watch import Watch
from shared.errors import ErrorCode
from shared.jobs.views import status_view

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
    watch: Watch,
    base_url: str,
    first: dict[str, Any],
    keepalive_s: float = KEEPALIVE_S,
    max_s: float = MAX_S,
) -> AsyncIterator[str]:
    """The event stream of one watched job, starting from its status JSON ``first``; gives the
    watch back when it ends (finished, timed out, or the client went away)."""
    with watch:
        view: dict[str, Any] | None = first
        sent: dict[str, Any] | None = None
        count, last_write = 0, time.monotonic()
        deadline = last_write + max_s
        while True:
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
            now = time.monotonic()
            if now >= deadline:
                return
            if not await watch.changed(min(deadline, last_write + keepalive_s) - now):
                if time.monotonic() - last_write >= keepalive_s:
                    yield ": keep-alive\n\n"
                    last_write = time.monotonic()
                continue
            record, position = watch.current()
            view = None if record is None else status_view(record, base_url, position)
