"""Requeue running jobs whose worker died: the beat task ``idbody.reap_orphans`` runs ``reap`` every
``reaper_interval_s``.

A worker holds each running job under a lease (``job-lease:{id}``) that its heartbeat renews every
third of ``worker_heartbeat_ttl_s``. A SIGKILLed or frozen worker stops renewing; once the lease has
expired the job goes back to ``queued`` (at its old place: scored by ``created_at``), with a note,
and its task is sent again. So a dead worker's job runs again within ttl + interval, not after the
broker's visibility timeout (an hour), and its API key's slot is not held meanwhile by a job that
nobody runs. Completion stays exactly-once: the record's guarded transitions let only one run
finish it, and the job's end announces one webhook per (job, final status). The killed worker's
unacked message still comes back after the visibility timeout; the record makes it a no-op.

Example::

    JobReaper(store, celery).reap()   # ["0b7f...", ...]: the request ids it requeued
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

from shared.jobs.record import JobRecord, JobStatus
from shared.jobs.store import JOB_KEY, LEASE_KEY, QUEUE_KEY, RUNNING_KEY, JobStore
from shared.queues import GENERATE_TASK, GPU_QUEUE

log = logging.getLogger(__name__)

REQUEUED_NOTE = "requeued: the worker running it stopped answering"


class JobReaper:
    def __init__(self, store: JobStore, celery: Any) -> None:
        self.store = store
        self.celery = celery

    def reap(self) -> list[str]:
        """Requeue every running job without a lease; the ids requeued."""
        client = self.store.client
        running = [m.decode() for m in client.zrange(RUNNING_KEY, 0, -1)]
        if not running:
            return []
        pipe = client.pipeline(transaction=False)
        for request_id in running:
            pipe.exists(LEASE_KEY.format(request_id))
        orphans = [rid for rid, leased in zip(running, pipe.execute()) if not leased]
        requeued = [rid for rid in orphans if self._requeue(rid)]
        for request_id in requeued:
            self.celery.send_task(GENERATE_TASK, args=[request_id], queue=GPU_QUEUE)
            log.warning("job %s requeued: its worker's lease expired", request_id)
        return requeued

    def _requeue(self, request_id: str) -> bool:
        """running (and still unleased) -> queued, atomically; False when something else moved it."""
        key, lease = JOB_KEY.format(request_id), LEASE_KEY.format(request_id)
        with self.store.client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(key, lease)
                raw = pipe.get(key)
                if pipe.exists(lease):
                    return False
                if raw is None:  # expired while running: nothing to run any more
                    pipe.multi()
                    pipe.zrem(RUNNING_KEY, request_id)
                    pipe.execute()
                    return False
                record = JobRecord.model_validate_json(raw)
                if record.status is not JobStatus.RUNNING:
                    return False
                queued = record.model_copy(update={"status": JobStatus.QUEUED, "note": REQUEUED_NOTE,
                                                   "requeued_at": time.time()})
                pipe.multi()
                pipe.set(key, queued.model_dump_json(), ex=self.store.retention_s)
                pipe.zrem(RUNNING_KEY, request_id)
                pipe.zadd(QUEUE_KEY, {request_id: record.created_at})
                pipe.execute()
                return True
            except redis.WatchError:
                return False  # the worker came back or finished meanwhile; the next round looks again
