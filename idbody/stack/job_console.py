"""One console line per job event for ``idbody up``: a job queued, each stage it enters, how it
ended. Read from the job records (the queued and running sets, and the finish notices the store
publishes), so the console shows what clients see, not library logs.

Example::

    console = JobConsole(JobStore.from_settings(settings))
    while True:
        console.poll()          # prints e.g. "12:00:01  5f0c1a2b  running: denoising (8 steps)"
        time.sleep(0.5)
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Any

from shared.jobs.record import JobRecord, JobStatus
from shared.jobs.store import FINISHED_CHANNEL, QUEUE_KEY, RUNNING_KEY, JobStore

ENDED_KEPT = 4096  # ended jobs remembered; a late finish notice comes within a poll or two


def event_line(record: JobRecord, position: int | None = None) -> str:
    """The console's words for a record's current state.

    Example::

        event_line(record)   # "running: denoising (8 steps)"
    """
    status = record.status
    if status is JobStatus.QUEUED:
        return f"queued (position {position})" if position else "queued"
    if status is JobStatus.RUNNING:
        stage = record.progress.stage or "starting"
        steps = f" ({record.progress.total} steps)" if stage == "denoising" and record.progress.total else ""
        return f"running: {stage}{steps}"
    took = ""
    if record.finished_at is not None:
        took = f" in {record.finished_at - (record.started_at or record.created_at):.1f} s"
    if status is JobStatus.SUCCEEDED:
        images = record.result.images if record.result else []
        size = f" {images[0].width}x{images[0].height}" if images else ""
        return f"succeeded{took}: {len(images)} images{size}"
    error = f": {record.error.code} ({record.error.message})" if record.error else ""
    return f"{status.value}{took}{error}"


class JobConsole:
    """Prints a line whenever a job's status or stage changes; forgets a job once it finished."""

    def __init__(self, store: JobStore, out: Callable[[str], Any] = print) -> None:
        self.store, self.out = store, out
        self.shown: dict[str, tuple[str, str | None]] = {}  # request_id -> (status, stage) printed last
        # jobs whose end was printed: a finish notice that arrives a poll later must not print them again
        self.ended: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.finished = store.client.pubsub(ignore_subscribe_messages=True)
        # a job can finish between two polls without ever being seen queued or running
        self.finished.psubscribe(FINISHED_CHANNEL.format("*"))

    def poll(self) -> None:
        """Print what changed since the last call."""
        ids = set(self.shown)
        for key in (QUEUE_KEY, RUNNING_KEY):
            ids.update(rid.decode() for rid in self.store.client.zrange(key, 0, -1))
        while (message := self.finished.get_message(timeout=0)) is not None:
            ids.add(message["channel"].decode().split(":", 1)[1])
        for rid in sorted(ids - set(self.ended)):
            record, position = self.store.get_with_position(rid)
            if record is None:
                self.shown.pop(rid, None)
                continue
            state = (record.status.value, record.progress.stage)
            if rid not in self.shown and record.status is not JobStatus.QUEUED:
                # taken by a worker before a poll saw it queued: the queued line still comes first
                self._print(record.created_at, rid, "queued")
            if state != self.shown.get(rid):
                self._print(time.time(), rid, event_line(record, position))
            if record.status.finished:
                self.shown.pop(rid, None)
                self.ended[rid] = None
                while len(self.ended) > ENDED_KEPT:
                    self.ended.popitem(last=False)
            else:
                self.shown[rid] = state

    def _print(self, at: float, request_id: str, line: str) -> None:
        self.out(f"{time.strftime('%H:%M:%S', time.localtime(at))}  job {request_id[:8]}  {line}")

    def close(self) -> None:
        self.finished.close()
