"""One watcher per gateway process: it reads every watched job in one pipelined Valkey round trip
and wakes the event streams whose job changed.

A stream holds no thread and issues no reads of its own: it awaits its job's change signal. The
watcher's loop runs only while something is watched; each pass costs one thread hop and one round
trip whatever the number of streams, and the next pass waits at least ``poll_s`` and at least as
long as the last read took (so 5,000 watched jobs slow the updates down instead of the gateway).

Open streams are capped per process (503 ``streams_full``) and per API key in each process (429
``too_many_streams``), both with Retry-After; a refused client polls the status instead.

Example::

    watcher = JobWatcher(store, max_streams=2000, max_per_key=50)
    with watcher.watch("r1", owner="key_1") as watch:      # raises 429/503 past a cap
        changed = await watch.changed(timeout_s=15)       # False: nothing new within 15 s
        record, position = watch.current()
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool

from shared.errors import ErrorCode, IdentityBodyError
from shared.jobs.record import JobRecord, JobStatus
from shared.jobs.store import JobStore

log = logging.getLogger(__name__)

POLL_S = 0.25
# a refused stream: how soon trying again is worth it (the page polls meanwhile)
RETRY_AFTER_S = 10


@dataclass
class _Watched:
    """One watched job: its last read (raw JSON and queue rank) and the signal of its next change."""

    raw: bytes | None = None
    rank: int | None = None
    record: JobRecord | None = None
    read: bool = False
    version: int = 0
    streams: int = 0
    signal: asyncio.Event = field(default_factory=asyncio.Event)


class Watch:
    """A stream's hold on one job; a context manager that gives its place back on exit."""

    def __init__(self, watcher: JobWatcher, request_id: str, owner: str) -> None:
        self.watcher = watcher
        self.request_id = request_id
        self.owner = owner
        self.seen = 0
        self.closed = False

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def changed(self, timeout_s: float) -> bool:
        """Wait until the watcher has read a change of the job (True) or ``timeout_s`` passed."""
        watched = self.watcher.jobs[self.request_id]
        if watched.version != self.seen:  # changed while the stream was busy sending
            return True
        try:
            await asyncio.wait_for(watched.signal.wait(), timeout=max(0.0, timeout_s))
        except TimeoutError:
            return False
        return True

    def current(self) -> tuple[JobRecord | None, int | None]:
        """The job's record (None: deleted or expired) and queue position, as last read."""
        watched = self.watcher.jobs[self.request_id]
        self.seen = watched.version
        queued = watched.record is not None and watched.record.status is JobStatus.QUEUED
        return watched.record, watched.rank if queued else None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.watcher.release(self)


class JobWatcher:
    """See the module docstring; one per gateway process, started lazily on the first watch."""

    def __init__(self, store: JobStore, max_streams: int, max_per_key: int, poll_s: float = POLL_S) -> None:
        self.store = store
        self.max_streams = int(max_streams)
        self.max_per_key = int(max_per_key)
        self.poll_s = float(poll_s)
        self.jobs: dict[str, _Watched] = {}
        self.per_key: Counter[str] = Counter()
        self.open_streams = 0
        self._task: asyncio.Task[None] | None = None

    def watch(self, request_id: str, owner: str | None) -> Watch:
        """Hold a place for one stream of ``request_id``, or raise 503/429 past a cap."""
        key = owner or "-"
        if self.open_streams >= self.max_streams:
            raise IdentityBodyError(
                ErrorCode.STREAMS_FULL,
                f"This server holds its most event streams ({self.max_streams}); poll the job's status_url "
                "instead, or open the stream again later.",
                retry_after_s=RETRY_AFTER_S,
            )
        if self.per_key[key] >= self.max_per_key:
            raise IdentityBodyError(
                ErrorCode.TOO_MANY_STREAMS,
                f"This API key has {self.max_per_key} event streams open; close one or poll the job's "
                "status_url instead.",
                retry_after_s=RETRY_AFTER_S,
            )
        self.open_streams += 1
        self.per_key[key] += 1
        self.jobs.setdefault(request_id, _Watched()).streams += 1
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="job-watcher")
        return Watch(self, request_id, key)

    def release(self, watch: Watch) -> None:
        self.open_streams -= 1
        self.per_key[watch.owner] -= 1
        if self.per_key[watch.owner] <= 0:
            del self.per_key[watch.owner]
        watched = self.jobs[watch.request_id]
        watched.streams -= 1
        if watched.streams <= 0:
            del self.jobs[watch.request_id]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        """Read all watched jobs, wake the changed ones; until nothing is watched."""
        while self.jobs:
            started = time.monotonic()
            ids = list(self.jobs)
            try:
                snapshots = await run_in_threadpool(self.store.snapshots, ids)
            except Exception as exc:  # Valkey down: streams stay open and quiet until it is back
                log.warning("job watcher: reading %d watched jobs failed: %s", len(ids), exc)
                snapshots = None
            if snapshots is not None:
                self._fan_out(ids, snapshots)
            took = time.monotonic() - started
            await asyncio.sleep(max(self.poll_s, took))

    def _fan_out(self, ids: list[str], snapshots: list[tuple[bytes | None, int | None]]) -> None:
        for request_id, (raw, rank) in zip(ids, snapshots, strict=True):
            watched = self.jobs.get(request_id)
            if watched is None or (watched.read and raw == watched.raw and rank == watched.rank):
                continue
            watched.raw, watched.rank, watched.read = raw, rank, True
            try:
                record = None if raw is None else JobRecord.model_validate_json(raw)
            except ValueError:  # a record no reader understands: its streams keep their last status
                log.warning("job watcher: the record of %s does not parse; its streams wait", request_id)
                continue
            watched.version += 1
            watched.record = record
            # streams waiting on the old signal wake; the next wait is on a fresh one
            signal, watched.signal = watched.signal, asyncio.Event()
            signal.set()


def watcher_of(app: Any) -> JobWatcher:
    """The app's watcher (made in the lifespan)."""
    return app.state.job_watcher
