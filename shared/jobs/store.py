"""Job records in Redis/Valkey: the one source of truth for a job's status.

Keys (all expire ``retention_s`` after their last write, except where noted)::

    job:{request_id}            JSON of JobRecord
    jobs:queued                 sorted set of queued request ids, scored by created_at (queue order)
    jobs:running                sorted set of running request ids, scored by when they started
    job-finished:{request_id}   pub/sub channel; one message when the job finishes
    worker:{worker_id}          JSON heartbeat of a live worker, expires after its ttl
    jobs:owner:{owner or -}     sorted set of an API key's request ids by created_at (the job list,
                                ``shared.jobs.listing``); jobs submitted without a key are under ``-``
    job-lease:{request_id}      the worker holding a running job; its heartbeat renews it, and a
                                running job without one is requeued by shared.jobs.reaper

Every status change goes through ``transition``: it reads, checks ``can_transition`` and writes under
WATCH/MULTI, so a cancel racing a completion, or a redelivered task writing late, can never move a
finished job or win twice.

Example::

    store = JobStore.from_settings(settings)
    store.create(JobRecord(request_id="r1", created_at=time.time()))
    store.transition("r1", JobStatus.RUNNING, worker="gpu0")
    store.set_progress("r1", 3, 8)
    store.transition("r1", JobStatus.SUCCEEDED, result={"images": [...]})
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import redis

from shared.jobs.record import JobRecord, JobStatus, Progress, WebhookAttempt, can_transition

JOB_KEY = "job:{}"
QUEUE_KEY = "jobs:queued"
RUNNING_KEY = "jobs:running"
FINISHED_CHANNEL = "job-finished:{}"
WORKER_KEY = "worker:{}"
WORKER_PATTERN = "worker:*"
OWNER_JOBS_KEY = "jobs:owner:{}"
LEASE_KEY = "job-lease:{}"

# WATCH/MULTI retries under contention; each retry means another writer changed the record, so a
# small bound is plenty (two writers race at most: cancel and the worker)
_MAX_WATCH_RETRIES = 64


class _Contended(RuntimeError):
    """A record kept changing under every WATCH/MULTI attempt."""


class JobStore:
    """Reads and writes job records; see the module docstring for the key layout."""

    def __init__(self, client: redis.Redis, retention_s: int, lease_ttl_s: int = 30) -> None:
        self.client = client
        self.retention_s = int(retention_s)
        self.lease_ttl_s = int(lease_ttl_s)

    @classmethod
    def from_settings(cls, settings: Any) -> "JobStore":
        """A store on ``settings.redis_url`` keeping records ``settings.job_retention_s``; a running
        job's lease lasts one worker heartbeat ttl. Connecting gives up after 5 s, so a Valkey that
        is down answers an error (503 at the gateway) instead of hanging the caller."""
        client = redis.Redis.from_url(settings.redis_url, health_check_interval=30, socket_connect_timeout=5)
        return cls(client, settings.job_retention_s, settings.worker_heartbeat_ttl_s)

    # --- records -------------------------------------------------------------------------------

    def create(self, record: JobRecord) -> int:
        """Store a new queued record, put it at the end of the queue order and return its 1-based
        queue position: one MULTI/EXEC round trip for all of it (the submit path's hot spot).

        Example::

            store.create(JobRecord(request_id="r1", created_at=time.time()))   # 1
        """
        record = record.model_copy(update={"status": JobStatus.QUEUED})
        pipe = self.client.pipeline(transaction=True)
        pipe.set(JOB_KEY.format(record.request_id), record.model_dump_json(), ex=self.retention_s)
        pipe.zadd(QUEUE_KEY, {record.request_id: record.created_at})
        pipe.expire(QUEUE_KEY, self.retention_s)
        owner_jobs = OWNER_JOBS_KEY.format(record.owner or "-")
        pipe.zadd(owner_jobs, {record.request_id: record.created_at})
        pipe.expire(owner_jobs, self.retention_s)
        pipe.zrank(QUEUE_KEY, record.request_id)
        rank = pipe.execute()[-1]
        return int(rank) + 1

    def get(self, request_id: str) -> JobRecord | None:
        """The record, or None when unknown or expired."""
        raw = self.client.get(JOB_KEY.format(request_id))
        return None if raw is None else JobRecord.model_validate_json(raw)

    def get_with_position(self, request_id: str) -> tuple[JobRecord | None, int | None]:
        """The record and its 1-based queue position (None unless queued) in one round trip.

        Example::

            record, position = store.get_with_position("r1")   # (JobRecord(...), 3)
        """
        pipe = self.client.pipeline(transaction=False)
        pipe.get(JOB_KEY.format(request_id))
        pipe.zrank(QUEUE_KEY, request_id)
        raw, rank = pipe.execute()
        if raw is None:
            return None, None
        record = JobRecord.model_validate_json(raw)
        queued = record.status is JobStatus.QUEUED and rank is not None
        return record, int(rank) + 1 if queued else None

    def snapshots(self, request_ids: list[str]) -> list[tuple[bytes | None, int | None]]:
        """Each job's raw record JSON (None: unknown or expired) and 1-based rank in the queue order
        (None: not in it), all in one round trip: the gateway's stream watcher compares them to its
        last read and decodes only what changed.

        Example::

            store.snapshots(["r1", "r2"])   # [(b'{"request_id": "r1", ...}', 3), (None, None)]
        """
        pipe = self.client.pipeline(transaction=False)
        for request_id in request_ids:
            pipe.get(JOB_KEY.format(request_id))
            pipe.zrank(QUEUE_KEY, request_id)
        replies = pipe.execute()
        return [(raw, None if rank is None else int(rank) + 1) for raw, rank in zip(replies[::2], replies[1::2])]

    def delete(self, request_id: str) -> None:
        """Remove the record and its place in the queue order now."""
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(JOB_KEY.format(request_id))
        pipe.zrem(QUEUE_KEY, request_id)
        pipe.zrem(RUNNING_KEY, request_id)
        pipe.execute()

    def transition(self, request_id: str, new_status: JobStatus | str, **fields: Any) -> JobRecord | None:
        """Move a job to ``new_status`` atomically, setting ``fields`` (JobRecord attributes) too.

        Returns the updated record, or None when the job is unknown or the move is illegal
        (finished jobs never move). Entering ``running`` counts an attempt, records ``worker``
        and resets progress; finishing stamps ``finished_at``, leaves the queue order and
        publishes on ``job-finished:{id}``.

        Example::

            store.transition(rid, JobStatus.FAILED, error={"code": "no_face_detected", "message": "..."})
        """
        new_status = JobStatus(new_status)

        def move(current: JobRecord) -> JobRecord | None:
            if not can_transition(current.status, new_status):
                return None
            return _apply_transition(current, new_status, fields, now=time.time())

        def side_effects(pipe: Any) -> None:
            if new_status is not JobStatus.QUEUED:
                pipe.zrem(QUEUE_KEY, request_id)
            if new_status is JobStatus.RUNNING:
                # the lease is taken in the same MULTI, so no reaper ever sees it running unleased
                pipe.set(LEASE_KEY.format(request_id), str(fields.get("worker") or ""), ex=self.lease_ttl_s)
                now = time.time()
                pipe.zadd(RUNNING_KEY, {request_id: now})
                # a record that expired while running (its worker died for good) leaves the set here
                pipe.zremrangebyscore(RUNNING_KEY, "-inf", now - self.retention_s)
                pipe.expire(RUNNING_KEY, self.retention_s)
            else:
                pipe.zrem(RUNNING_KEY, request_id)
            if new_status.finished:
                pipe.delete(LEASE_KEY.format(request_id))
                pipe.publish(FINISHED_CHANNEL.format(request_id), new_status.value)

        return self._modify(request_id, move, also=side_effects)

    def set_progress(self, request_id: str, step: int, total: int, stage: str | None = None,
                     eta_s: float | None = None) -> bool:
        """Record progress (step of total, the stage, seconds left); True when written (only while
        the job is running)."""

        def progress(record: JobRecord) -> JobRecord | None:
            if record.status is not JobStatus.RUNNING:
                return None
            record.progress = Progress(step=int(step), total=int(total), stage=stage, eta_s=eta_s)
            return record

        try:
            return self._modify(request_id, progress) is not None
        except _Contended:
            return False  # progress is advisory: the next step writes it again

    def update(self, request_id: str, **fields: Any) -> JobRecord | None:
        """Set non-status fields (e.g. webhook attempts) without moving the job; None when unknown."""
        if "status" in fields:
            raise ValueError("use transition() to change a job's status")
        return self._modify(request_id, lambda record: JobRecord.model_validate(
            {**record.model_dump(), **_plain(fields)}))

    def append_webhook_attempt(self, request_id: str, attempt: WebhookAttempt) -> JobRecord | None:
        """Add one webhook delivery attempt to the record atomically; None when the job is unknown.

        Example::

            store.append_webhook_attempt(rid, WebhookAttempt(attempt=1, at=time.time(), status_code=503))
        """

        def append(record: JobRecord) -> JobRecord:
            record.webhook_attempts.append(attempt)
            return record

        return self._modify(request_id, append)

    def _modify(
        self,
        request_id: str,
        change: Callable[[JobRecord], JobRecord | None],
        also: Callable[[Any], None] | None = None,
    ) -> JobRecord | None:
        """Read-change-write one record under WATCH/MULTI, retrying when another writer got there
        first. ``change`` gets the current record and returns the new one, or None to write
        nothing; ``also`` queues further commands into the same MULTI. Returns what was written,
        or None when the job is unknown or ``change`` declined; raises ``_Contended`` (a
        RuntimeError) after ``_MAX_WATCH_RETRIES`` lost races."""
        key = JOB_KEY.format(request_id)
        for _ in range(_MAX_WATCH_RETRIES):
            with self.client.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    if raw is None:
                        return None
                    updated = change(JobRecord.model_validate_json(raw))
                    if updated is None:
                        return None
                    pipe.multi()
                    pipe.set(key, updated.model_dump_json(), ex=self.retention_s)
                    if also is not None:
                        also(pipe)
                    pipe.execute()
                    return updated
                except redis.WatchError:
                    continue
        raise _Contended(f"job {request_id}: too much contention on its record")

    # --- queue order and waiting -----------------------------------------------------------------

    def queued_count(self) -> int:
        """Jobs waiting in the queue order now."""
        return int(self.client.zcard(QUEUE_KEY))

    def running_count(self) -> int:
        """Jobs whose record says running now (started within the retention)."""
        return int(self.client.zcount(RUNNING_KEY, time.time() - self.retention_s, "+inf"))

    def queue_position(self, request_id: str) -> int | None:
        """1-based place among queued jobs, or None when the job is not queued."""
        rank = self.client.zrank(QUEUE_KEY, request_id)
        return None if rank is None else int(rank) + 1

    def wait_finished(self, request_id: str, timeout_s: float) -> JobRecord | None:
        """Block until the job finishes or ``timeout_s`` passes; the record if finished, else None.

        Subscribes before reading, so a finish landing between the read and the wait is not missed.

        Example::

            record = store.wait_finished(rid, 30)   # None: still queued or running after 30 s
        """
        deadline = time.monotonic() + max(0.0, float(timeout_s))
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(FINISHED_CHANNEL.format(request_id))
            while True:
                record = self.get(request_id)
                if record is None:
                    return None
                if record.status.finished:
                    return record
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                # a message (or the deadline) ends the wait; the loop re-reads the record either way
                pubsub.get_message(timeout=remaining)
        finally:
            pubsub.close()

    # --- workers -----------------------------------------------------------------------------------

    def heartbeat_worker(self, worker_id: str, info: dict[str, Any], ttl_s: int) -> None:
        """Say that ``worker_id`` is alive for ``ttl_s`` seconds.

        ``info`` is free-form; the gateway's /readyz counts a worker as ready unless
        ``info["pipeline_loaded"]`` is false, so send the heartbeat after the pipeline loaded.

        Example::

            store.heartbeat_worker("gpu0@host", {"pipeline_loaded": True, "profile": "tiny"}, 30)
        """
        payload = {**info, "worker_id": worker_id, "seen_at": time.time()}
        self.client.set(WORKER_KEY.format(worker_id), json.dumps(payload), ex=int(ttl_s))

    def renew_leases(self, worker_id: str, request_ids: list[str], ttl_s: int) -> None:
        """Say that ``worker_id`` still holds ``request_ids`` (running jobs) for ``ttl_s`` seconds.

        Example::

            store.renew_leases("host:123", ["r1"], 30)
        """
        if not request_ids:
            return
        pipe = self.client.pipeline(transaction=False)
        for request_id in request_ids:
            pipe.set(LEASE_KEY.format(request_id), worker_id, ex=int(ttl_s))
        pipe.execute()

    def forget_worker(self, worker_id: str) -> None:
        """Drop ``worker_id``'s heartbeat now (a clean shutdown), instead of after its ttl."""
        self.client.delete(WORKER_KEY.format(worker_id))

    def live_workers(self) -> list[dict[str, Any]]:
        """Heartbeats of every worker seen within its ttl (each with ``worker_id`` and ``seen_at``)."""
        keys = list(self.client.scan_iter(match=WORKER_PATTERN, count=500))
        if not keys:
            return []
        return [json.loads(raw) for raw in self.client.mget(keys) if raw is not None]

    def ping(self) -> bool:
        """True when Redis answers."""
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False


def _plain(fields: dict[str, Any]) -> dict[str, Any]:
    """Pydantic models among ``fields`` as plain data, so the record re-validates them."""
    return {k: v.model_dump() if hasattr(v, "model_dump") else v for k, v in fields.items()}


def _apply_transition(current: JobRecord, new: JobStatus, fields: dict[str, Any], now: float) -> JobRecord:
    data = {**current.model_dump(), **_plain(fields), "status": new}
    if new is JobStatus.RUNNING:
        data["attempts"] = current.attempts + 1
        data["started_at"] = now
        data["progress"] = fields.get("progress") or Progress().model_dump()
    if new.finished:
        data["finished_at"] = now
    return JobRecord.model_validate(data)
