"""JobStore on a real Valkey: guarded transitions, queue order, progress, waiting, heartbeats."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from idbody.stack.polling import until
from shared.jobs.record import ALLOWED, JobRecord, JobStatus
from shared.jobs.store import JOB_KEY, JobStore

pytestmark = pytest.mark.integration

RETENTION_S = 600


@pytest.fixture
def store(redis_client) -> JobStore:
    return JobStore(redis_client, retention_s=RETENTION_S)


def _new(store: JobStore, created_at: float | None = None) -> str:
    rid = uuid.uuid4().hex
    store.create(JobRecord(request_id=rid, created_at=created_at or time.time(), params={"num_images": 2}))
    return rid


def _force_status(store: JobStore, rid: str, status: JobStatus) -> None:
    """Bring a fresh job to ``status`` along a legal path."""
    if status is JobStatus.QUEUED:
        return
    if status is not JobStatus.RUNNING and status.finished:
        assert store.transition(rid, JobStatus.RUNNING, worker="w") is not None
        assert store.transition(rid, status) is not None
        return
    assert store.transition(rid, status, worker="w") is not None


def test_create_stores_queued_record_with_ttl(store, redis_client):
    rid = _new(store)
    record = store.get(rid)
    assert record is not None and record.status is JobStatus.QUEUED
    assert record.params == {"num_images": 2}
    ttl = redis_client.ttl(JOB_KEY.format(rid))
    assert 0 < ttl <= RETENTION_S


def test_unknown_job(store):
    assert store.get("nope") is None
    assert store.transition("nope", JobStatus.RUNNING) is None
    assert store.set_progress("nope", 1, 2) is False
    assert store.queue_position("nope") is None


@pytest.mark.parametrize("start", list(JobStatus))
@pytest.mark.parametrize("target", list(JobStatus))
def test_every_transition_follows_the_table(store, start, target):
    rid = _new(store)
    _force_status(store, rid, start)
    before = store.get(rid)
    result = store.transition(rid, target, worker="w2")
    after = store.get(rid)
    if target in ALLOWED[start]:
        assert result is not None and result.status is target
        assert after.status is target
    else:
        assert result is None
        assert after == before  # an illegal move writes nothing


def test_running_counts_attempts_and_records_worker(store):
    rid = _new(store)
    first = store.transition(rid, JobStatus.RUNNING, worker="gpu0")
    assert first.attempts == 1 and first.worker == "gpu0" and first.started_at is not None
    assert store.set_progress(rid, 5, 8)
    # redelivery after a worker died: a second worker takes the job and progress starts again
    second = store.transition(rid, JobStatus.RUNNING, worker="gpu1")
    assert second.attempts == 2 and second.worker == "gpu1"
    assert second.progress.step == 0


def test_finishing_sets_fields_and_timestamps(store, redis_client):
    rid = _new(store)
    store.transition(rid, JobStatus.RUNNING, worker="gpu0")
    done = store.transition(
        rid,
        JobStatus.FAILED,
        error={"code": "no_face_detected", "message": "No face was found."},
    )
    assert done.finished_at is not None and done.finished_at >= done.started_at
    stored = store.get(rid)
    assert stored.error.code == "no_face_detected"
    assert 0 < redis_client.ttl(JOB_KEY.format(rid)) <= RETENTION_S


def test_duplicate_finish_is_a_noop(store):
    rid = _new(store)
    store.transition(rid, JobStatus.RUNNING, worker="gpu0")
    first = store.transition(rid, JobStatus.SUCCEEDED, result={"images": [], "method": "instantid"})
    assert first is not None
    assert store.transition(rid, JobStatus.SUCCEEDED, result={"images": [], "method": "other"}) is None
    assert store.transition(rid, JobStatus.RUNNING, worker="late") is None
    stored = store.get(rid)
    assert stored.result.method == "instantid" and stored.finished_at == first.finished_at
    assert stored.worker == "gpu0"


def test_cancel_races_complete_exactly_one_wins(store):
    for _ in range(20):
        rid = _new(store)
        store.transition(rid, JobStatus.RUNNING, worker="gpu0")
        barrier = threading.Barrier(2)
        outcomes: dict[str, JobRecord | None] = {}

        def move(status: JobStatus) -> None:
            barrier.wait()
            outcomes[status.value] = store.transition(rid, status)

        threads = [threading.Thread(target=move, args=(s,)) for s in (JobStatus.CANCELED, JobStatus.SUCCEEDED)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        winners = [s for s, rec in outcomes.items() if rec is not None]
        assert len(winners) == 1, outcomes
        assert store.get(rid).status.value == winners[0]


def test_progress_only_while_running(store):
    rid = _new(store)
    assert store.set_progress(rid, 1, 8) is False
    store.transition(rid, JobStatus.RUNNING, worker="w")
    assert store.set_progress(rid, 3, 8) is True
    assert store.get(rid).progress.model_dump() == {"step": 3, "total": 8, "stage": None, "eta_s": None}
    store.transition(rid, JobStatus.SUCCEEDED)
    assert store.set_progress(rid, 4, 8) is False
    assert store.get(rid).progress.step == 3


def test_queue_positions_follow_creation_order(store):
    now = time.time()
    a, b, c = (_new(store, now + i) for i in range(3))
    assert [store.queue_position(r) for r in (a, b, c)] == [1, 2, 3]
    store.transition(a, JobStatus.RUNNING, worker="w")
    assert store.queue_position(a) is None
    assert [store.queue_position(r) for r in (b, c)] == [1, 2]
    store.transition(b, JobStatus.CANCELED)
    assert store.queue_position(c) == 1
    store.delete(c)
    assert store.get(c) is None and store.queue_position(c) is None


def test_wait_finished_wakes_on_finish(store):
    rid = _new(store)
    store.transition(rid, JobStatus.RUNNING, worker="w")
    subscribed = threading.Event()

    def finish() -> None:
        # wait until the waiter is subscribed, so the test exercises the pub/sub wake-up
        until(lambda: store.client.pubsub_numsub(f"job-finished:{rid}")[0][1], 10, "the waiter to subscribe",
              interval_s=0.01)
        subscribed.set()
        store.transition(rid, JobStatus.SUCCEEDED)

    t = threading.Thread(target=finish)
    t.start()
    record = store.wait_finished(rid, timeout_s=30)
    t.join(10)
    assert subscribed.is_set()
    assert record is not None and record.status is JobStatus.SUCCEEDED


def test_wait_finished_returns_at_once_when_already_finished(store):
    rid = _new(store)
    store.transition(rid, JobStatus.FAILED, error={"code": "internal_error", "message": "x"})
    assert store.wait_finished(rid, timeout_s=30).status is JobStatus.FAILED


def test_wait_finished_times_out(store):
    rid = _new(store)
    assert store.wait_finished(rid, timeout_s=0.2) is None
    assert store.get(rid).status is JobStatus.QUEUED


def test_worker_heartbeats_expire(store, redis_client):
    store.heartbeat_worker("gpu0@host", {"pipeline_loaded": True, "profile": "tiny"}, ttl_s=30)
    store.heartbeat_worker("gpu1@host", {"pipeline_loaded": False}, ttl_s=30)
    workers = {w["worker_id"]: w for w in store.live_workers()}
    assert set(workers) == {"gpu0@host", "gpu1@host"}
    assert workers["gpu0@host"]["profile"] == "tiny" and workers["gpu0@host"]["seen_at"] > 0
    assert 0 < redis_client.ttl("worker:gpu0@host") <= 30
    redis_client.delete("worker:gpu1@host")  # what expiry does after the ttl
    assert [w["worker_id"] for w in store.live_workers()] == ["gpu0@host"]


def test_a_stopped_heartbeat_withdraws_the_worker_at_once(store):
    from worker.jobs.heartbeat import Heartbeat

    other = Heartbeat(store, "gpu1@host", {"pipeline_loaded": True}, ttl_s=30).start()
    beat = Heartbeat(store, "gpu0@host", {"pipeline_loaded": True}, ttl_s=30).start()
    assert {w["worker_id"] for w in store.live_workers()} == {"gpu0@host", "gpu1@host"}
    beat.stop()
    assert [w["worker_id"] for w in store.live_workers()] == ["gpu1@host"]
    other.stop()
    assert store.live_workers() == []


def test_running_count_follows_transitions_and_forgets_expired_records(store, redis_client):
    a, b, c = _new(store), _new(store), _new(store)
    assert store.running_count() == 0
    store.transition(a, JobStatus.RUNNING, worker="gpu0")
    store.transition(b, JobStatus.RUNNING, worker="gpu1")
    store.transition(b, JobStatus.RUNNING, worker="gpu2")  # redelivered: still one job
    assert store.running_count() == 2
    store.transition(a, JobStatus.SUCCEEDED, result={"images": []})
    store.transition(b, JobStatus.CANCELED)
    assert store.running_count() == 0
    store.transition(c, JobStatus.RUNNING, worker="gpu0")
    store.delete(c)  # purged while running
    assert store.running_count() == 0
    # a job whose worker died for good and whose record expired stops counting after the retention
    redis_client.zadd("jobs:running", {"gone": time.time() - RETENTION_S - 1})
    assert store.running_count() == 0
