"""The io worker as a real Celery process: webhook delivery with retries and the beat-driven sweep."""

from __future__ import annotations

import sys
import time
import uuid

import pytest
from standardwebhooks.webhooks import Webhook

from idbody.stack.polling import until
from idbody.stack.service import ServiceStack, stack_settings
from shared.access.api_keys import ApiKeyStore
from shared.celery_app import make_celery
from shared.jobs.end import JobEnd
from shared.jobs.record import JobRecord, JobStatus
from shared.jobs.retention import Retention
from shared.jobs.store import JobStore
from shared.storage import Storage
from tests.webhook_receiver import Receiver


@pytest.fixture(scope="module")
def io_stack(valkey, s3_server, tmp_path_factory):
    settings = stack_settings(
        valkey, s3_server, 5, "io", webhook_allow_hosts=["127.0.0.1"],
        webhook_backoff_base_s=0.2, webhook_max_attempts=5, sweep_interval_s=1, job_retention_s=3600,
    )
    store = JobStore.from_settings(settings)
    store.client.flushdb()
    storage = Storage.from_settings(settings)
    storage.ensure_buckets()
    with ServiceStack(settings, tmp_path_factory.mktemp("io-logs")) as stack:
        stack._start("io0", [sys.executable, "-m", "idbody.cli", "worker", "--queues", "io", "--beat",
                             "--hostname", "io0@test", "--concurrency", "2"])
        yield stack, settings, store, storage


def _finished_job(store, owner, url) -> JobRecord:
    rid = str(uuid.uuid4())
    store.create(JobRecord(request_id=rid, created_at=time.time(), owner=owner, webhook_url=url))
    store.transition(rid, JobStatus.RUNNING, worker="gpu0")
    return store.transition(rid, JobStatus.SUCCEEDED)


def test_fails_twice_then_one_delivery_signed_and_recorded(io_stack):
    stack, settings, store, storage = io_stack
    receiver = Receiver(script=[503, 502, 200])
    try:
        key = ApiKeyStore(store.client).create("io", 60, 5).key
        record = _finished_job(store, key.id, receiver.url())
        celery = make_celery(settings)
        job_end = JobEnd.from_settings(settings, celery, storage, store)
        job_end.after_finish(record)
        job_end.after_finish(record, count=False)  # the GPU task redelivered after it had finished
        attempts = until(lambda: len(store.get(record.request_id).webhook_attempts) == 3
                         and store.get(record.request_id).webhook_attempts, 60, "three attempts")
        assert [a.status_code for a in attempts] == [503, 502, 200]
        assert [r.headers["webhook-id"] for r in receiver.requests] == [f"{record.request_id}_succeeded"] * 3
        last = receiver.requests[-1]
        body = Webhook(key.webhook_secret).verify(last.body, last.headers)
        assert body["request_id"] == record.request_id and body["status"] == "succeeded"
        assert "webhook_attempts" not in body
        # nothing else is queued for this event: the redelivered finish enqueued nothing
        until(lambda: store.client.llen("io") == 0, 10, "io queue drained")
        assert len(receiver.requests) == 3
    finally:
        receiver.close()


def test_410_stops_after_one_attempt(io_stack):
    stack, settings, store, storage = io_stack
    receiver = Receiver(script=[410, 200])
    try:
        key = ApiKeyStore(store.client).create("gone", 60, 5).key
        record = _finished_job(store, key.id, receiver.url())
        JobEnd.from_settings(settings, make_celery(settings), storage, store).after_finish(record)
        attempts = until(lambda: store.get(record.request_id).webhook_attempts, 30, "an attempt")
        assert [a.status_code for a in attempts] == [410]
        until(lambda: store.client.llen("io") == 0 and "410" in stack.log("io0"), 10, "task done")
        assert len(receiver.requests) == 1
    finally:
        receiver.close()


def test_beat_sweeps_expired_uploads(io_stack):
    stack, settings, store, storage = io_stack
    key = storage.put_upload("sweep-me", b"face", "image/png")
    Retention.from_settings(settings, storage, store).track_upload(key, time.time() - 7200)
    until(lambda: storage.client.list_objects_v2(Bucket=storage.uploads_bucket).get("KeyCount", 0) == 0,
          60, "the sweep to delete the expired upload")
