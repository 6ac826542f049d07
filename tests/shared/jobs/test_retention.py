"""Retention on real Valkey and SeaweedFS: uploads go when jobs end, results expire, purge is total."""

import time
import uuid

import pytest

from shared.jobs.record import JobRecord, JobStatus
from shared.jobs.retention import Retention
from shared.jobs.store import JobStore
from shared.storage import Storage
from worker.webhooks.ledger import DeliveryLedger


@pytest.fixture
def parts(settings, redis_client):
    storage = Storage.from_settings(settings)
    storage.ensure_buckets()
    store = JobStore(redis_client, settings.job_retention_s)
    return storage, store


def _objects(storage: Storage) -> list[str]:
    found = []
    for bucket in (storage.uploads_bucket, storage.results_bucket):
        found += [f"{bucket}/{o['Key']}" for o in storage.client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return found


def _job(storage, store, retention, images=2) -> JobRecord:
    rid = uuid.uuid4().hex
    key = storage.put_upload(rid, b"face-bytes", "image/png")
    store.create(JobRecord(request_id=rid, created_at=time.time(), upload_key=key))
    retention.track_upload(key, time.time())
    for i in range(images):
        storage.put_result(rid, i, b"png")
    return store.get(rid)


def test_upload_deleted_when_job_ends_results_kept_until_due(parts, redis_client):
    storage, store = parts
    retention = Retention(redis_client, storage, store, upload_retention_s=0, job_retention_s=3600)
    record = _job(storage, store, retention)
    finished = store.transition(record.request_id, JobStatus.FAILED)
    now = time.time()
    retention.job_finished(finished, now)
    assert _objects(storage) == [f"{storage.results_bucket}/{record.request_id}/identity_body_{i}.png" for i in (0, 1)]
    assert retention.sweep(now + 10).results == 0
    report = retention.sweep(now + 3601)
    assert report.results == 1 and _objects(storage) == [] and store.get(record.request_id) is None


def test_upload_retention_setting_keeps_it_then_sweep_removes(parts, redis_client):
    storage, store = parts
    retention = Retention(redis_client, storage, store, upload_retention_s=600, job_retention_s=3600)
    record = _job(storage, store, retention, images=0)
    now = time.time()
    retention.job_finished(record, now)
    assert retention.sweep(now + 599).uploads == 0 and len(_objects(storage)) == 1
    assert retention.sweep(now + 601).uploads == 1 and _objects(storage) == []


def test_sweep_removes_uploads_of_jobs_that_never_ended(parts, redis_client):
    storage, store = parts
    retention = Retention(redis_client, storage, store, upload_retention_s=0, job_retention_s=60)
    _job(storage, store, retention, images=0)
    assert retention.sweep(time.time() + 61).uploads == 1
    assert _objects(storage) == []


def test_purge_leaves_no_object_and_no_record(parts, redis_client):
    storage, store = parts
    retention = Retention(redis_client, storage, store, upload_retention_s=0, job_retention_s=3600)
    keep = _job(storage, store, retention, images=1)
    record = _job(storage, store, retention, images=3)
    redis_client.set(f"webhook:enqueued:{record.request_id}:succeeded", "1")  # the job end's announce marker
    ledger = DeliveryLedger(redis_client, 60)
    ledger.mark_delivered(record.request_id, "succeeded")
    assert ledger.lock(record.request_id, "canceled", hold_s=60)
    retention.purge(record)
    assert all(record.request_id not in o for o in _objects(storage))
    assert len(_objects(storage)) == 2  # the other job is untouched
    assert store.get(record.request_id) is None
    assert not [k for k in redis_client.scan_iter("*") if record.request_id.encode() in k]
    assert redis_client.zscore("retention:results", record.request_id) > time.time()  # late-write sweep
    assert store.get(keep.request_id) is not None
