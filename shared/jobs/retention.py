"""Retention of uploads (face photos: biometric data; the pose photo), result images and job records.

- A job's uploads are deleted as soon as its job ends (``upload_retention_s`` may keep them N seconds).
  Every upload is also tracked from the moment it is stored, due ``job_retention_s`` later, so an
  upload whose job never reports an end (a lost task, a crashed gateway) is still deleted.
- Result images (and the record, which Redis also expires by itself) are due ``job_retention_s``
  after the job ended.
- ``purge`` deletes everything of one job now (``DELETE /api/v1/jobs/{id}``).
- ``sweep`` (a periodic io task) deletes whatever is past due.

Keys::

    retention:uploads   sorted set: upload object key -> due time (Unix s)
    retention:results   sorted set: request_id        -> due time (Unix s)

Example::

    retention = Retention.from_settings(settings, storage, store)
    retention.track_upload(record.upload_key, record.created_at)
    retention.job_finished(record)           # at the end of a job
    retention.sweep()                        # SweepReport(uploads=3, results=1)
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import redis

from shared.jobs.record import JobRecord
from shared.jobs.store import JobStore
from shared.storage import Storage

log = logging.getLogger(__name__)

UPLOADS_DUE = "retention:uploads"
RESULTS_DUE = "retention:results"
SWEEP_BATCH = 500
LATE_WRITE_GRACE_S = 900
# Every per-job webhook marker is named webhook:<kind>:<request_id>:<event>: the job end's announce
# marker (shared.jobs.end) and the delivery ledger's lock and delivered markers (worker.webhooks).
WEBHOOK_MARKERS = "webhook:*:{}:*"


@dataclass(frozen=True)
class SweepReport:
    uploads: int = 0
    results: int = 0


class Retention:
    def __init__(self, client: redis.Redis, storage: Storage, store: JobStore,
                 upload_retention_s: int, job_retention_s: int) -> None:
        self.client = client
        self.storage = storage
        self.store = store
        self.upload_retention_s = int(upload_retention_s)
        self.job_retention_s = int(job_retention_s)

    @classmethod
    def from_settings(cls, settings: Any, storage: Storage, store: JobStore) -> "Retention":
        return cls(store.client, storage, store, settings.upload_retention_s, settings.job_retention_s)

    def track_upload(self, upload_key: str, stored_at: float) -> None:
        """Make sure an upload is deleted eventually, even if its job never ends."""
        self.client.zadd(UPLOADS_DUE, {upload_key: stored_at + self.job_retention_s}, nx=True)

    def job_finished(self, record: JobRecord, now: float | None = None) -> None:
        """Delete (or schedule) the job's uploads (face photos, pose photo), and schedule its results' expiry."""
        now = time.time() if now is None else now
        for key in record.upload_keys:
            if self.upload_retention_s == 0:
                try:
                    self._delete_upload(key)
                except Exception:
                    # S3 unreachable: the next sweep deletes them instead, rather than after job_retention_s
                    self.client.zadd(UPLOADS_DUE, {k: now for k in record.upload_keys})
                    raise
            else:
                self.client.zadd(UPLOADS_DUE, {key: now + self.upload_retention_s})
        self.client.zadd(RESULTS_DUE, {record.request_id: now + self.job_retention_s})

    def purge(self, record: JobRecord) -> None:
        """Delete the job's uploads, result images, record and webhook markers now (and sweep its
        results once more later, for an image a stopping worker was still writing)."""
        for key in record.upload_keys:
            self._delete_upload(key)
        self.storage.delete_results(record.request_id)
        # a worker stopping a just-canceled job may still write an image after this: sweep once more later
        self.client.zadd(RESULTS_DUE, {record.request_id: time.time() + LATE_WRITE_GRACE_S})
        self.store.delete(record.request_id)
        markers = list(self.client.scan_iter(match=WEBHOOK_MARKERS.format(record.request_id), count=100))
        if markers:
            self.client.delete(*markers)

    def sweep(self, now: float | None = None) -> SweepReport:
        """Delete every upload and result set past due; safe to run from several workers at once."""
        now = time.time() if now is None else now
        uploads = 0
        for key in self._due(UPLOADS_DUE, now):
            self._delete_upload(key)
            uploads += 1
        results = 0
        for request_id in self._due(RESULTS_DUE, now):
            self.storage.delete_results(request_id)
            self.store.delete(request_id)
            self.client.zrem(RESULTS_DUE, request_id)
            results += 1
        if uploads or results:
            log.info("retention sweep deleted %d uploads and %d result sets", uploads, results)
        return SweepReport(uploads=uploads, results=results)

    def _due(self, zset: str, now: float) -> list[str]:
        members = self.client.zrangebyscore(zset, "-inf", now, start=0, num=SWEEP_BATCH)
        return [m.decode() for m in members]

    def _delete_upload(self, key: str) -> None:
        # S3 deletes are idempotent: a missing object is not an error
        self.storage.delete_upload(key)
        self.client.zrem(UPLOADS_DUE, key)
