"""Leases, the reaper and readiness on a real Valkey: a running job whose worker stopped renewing
its lease goes back to the queue at its old place; a leased or finished one is left alone."""

from __future__ import annotations

import time
import uuid

import pytest

from api.routes.health import fresh_workers
from shared.jobs.reaper import REQUEUED_NOTE, JobReaper
from shared.jobs.record import JobRecord, JobStatus
from shared.jobs.store import LEASE_KEY, WORKER_KEY, JobStore
from shared.queues import GENERATE_TASK, GPU_QUEUE
from worker.jobs.heartbeat import Heartbeat, holding

pytestmark = pytest.mark.integration


class SentTasks:
    """Records send_task calls: the reaper's only use of Celery."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list, str]] = []

    def send_task(self, name: str, args: list, queue: str) -> None:
        self.sent.append((name, args, queue))


@pytest.fixture
def store(redis_client) -> JobStore:
    return JobStore(redis_client, retention_s=3600, lease_ttl_s=30)


def _running(store: JobStore, worker: str = "host:1") -> str:
    rid = uuid.uuid4().hex
    store.create(JobRecord(request_id=rid, created_at=time.time()))
    assert store.transition(rid, JobStatus.RUNNING, worker=worker) is not None
    return rid


def test_running_takes_a_lease_and_finishing_drops_it(store, redis_client):
    rid = _running(store, worker="host:7")
    assert redis_client.get(LEASE_KEY.format(rid)) == b"host:7"
    assert 0 < redis_client.ttl(LEASE_KEY.format(rid)) <= 30
    store.transition(rid, JobStatus.SUCCEEDED)
    assert not redis_client.exists(LEASE_KEY.format(rid))


def test_reaper_requeues_only_jobs_whose_lease_expired(store, redis_client):
    first = uuid.uuid4().hex
    store.create(JobRecord(request_id=first, created_at=time.time() - 100))  # oldest: stays first
    dead, alive = _running(store), _running(store)
    redis_client.delete(LEASE_KEY.format(dead))  # what an expired lease looks like
    tasks = SentTasks()

    assert JobReaper(store, tasks).reap() == [dead]

    record = store.get(dead)
    assert record.status is JobStatus.QUEUED and record.note == REQUEUED_NOTE and record.requeued_at
    assert store.queue_position(first) == 1 and store.queue_position(dead) == 2
    assert store.get(alive).status is JobStatus.RUNNING and store.running_count() == 1
    assert tasks.sent == [(GENERATE_TASK, [dead], GPU_QUEUE)]
    # the requeued job runs again and finishes once, like any redelivery
    assert store.transition(dead, JobStatus.RUNNING, worker="host:2").attempts == 2
    assert JobReaper(store, tasks).reap() == [] and len(tasks.sent) == 1


def test_reaper_leaves_finished_and_expired_records(store, redis_client):
    finished, gone = _running(store), _running(store)
    redis_client.delete(LEASE_KEY.format(gone), f"job:{gone}")
    store.transition(finished, JobStatus.FAILED, error={"code": "no_face_detected", "message": "x"})
    assert JobReaper(store, SentTasks()).reap() == []
    assert store.running_count() == 0


def test_heartbeat_renews_the_leases_of_held_jobs(store, redis_client):
    rid = _running(store, worker="host:9")
    beat = Heartbeat(store, "host:9", {"pipeline_loaded": True}, ttl_s=30).start()
    try:
        with holding(rid):
            redis_client.pexpire(LEASE_KEY.format(rid), 1000)  # nearly expired
            beat.beat()
            assert redis_client.ttl(LEASE_KEY.format(rid)) > 20
        redis_client.pexpire(LEASE_KEY.format(rid), 1000)
        beat.beat()  # released: no longer renewed
        assert redis_client.pttl(LEASE_KEY.format(rid)) <= 1000
    finally:
        beat.stop()


def test_readiness_stops_counting_a_worker_after_three_missed_beats(store, redis_client):
    beat = Heartbeat(store, "gpu0@host", {"pipeline_loaded": True}, ttl_s=30)
    beat.beat()
    assert [w["worker_id"] for w in fresh_workers(store)] == ["gpu0@host"]
    # the key lives 30 s after the last beat; 10 s without a beat (5 missed) is a dead worker
    redis_client.pexpire(WORKER_KEY.format("gpu0@host"), 20_000)
    assert store.live_workers() and fresh_workers(store) == []
