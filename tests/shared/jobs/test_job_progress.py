"""A running job's stage and ETA: the pure estimate, and what the runner writes into the record on
a real Valkey, in order."""

from __future__ import annotations

import pytest

from shared.jobs.progress import JobStage, StepEta
from shared.jobs.store import JobStore
from shared.storage import Storage
from tests.worker.jobs.test_job_runner import EngineStandIn, queued_job
from worker.jobs.runner import run_job


def test_eta_is_steps_left_times_the_steps_measured_after_the_first():
    eta = StepEta(total=8)
    assert eta.seconds_left(0) is None
    eta.step_done(1, now=102.0)  # the first step carries the first call at a new size: no estimate
    assert eta.seconds_left(1) is None
    eta.step_done(2, now=102.5)
    eta.step_done(3, now=103.0)  # from then on, the steps measured after it: 0.5 s each
    assert eta.seconds_left(3) == 2.5
    eta.step_done(8, now=105.5)  # steps that were not reported count by their number
    assert eta.seconds_left(8) == 0.0


def _timeline(marks: dict[int, float], ended: float) -> StepEta:
    eta = StepEta(total=7)
    for step, at in marks.items():
        eta.step_done(step, now=at)
    eta.end(now=ended)
    return eta


# a tiny-profile job at 256 px as the worker ran it (fast mode: 5 denoise steps, then the VAE
# decode and face detection, then 2 face-detail steps): the first step carries the first call at
# that size, and 1 s of decoding sits between steps 5 and 6, which the steps alone do not show
MEASURED = {1: 5.5, 2: 5.65, 3: 5.86, 4: 6.03, 5: 6.25, 6: 7.1, 7: 7.25}
MEASURED_END = 7.31


def test_eta_follows_the_previous_job_of_the_same_total_within_half():
    before = _timeline(MEASURED, MEASURED_END)
    # the same job on a machine twice as slow, 40 s into its face analysis
    now = {step: 40 + 2 * (at - MEASURED[1]) + 9 for step, at in MEASURED.items()}
    end = 40 + 2 * (MEASURED_END - MEASURED[1]) + 9
    eta = StepEta(total=7, previous=before)
    for step, at in now.items():
        eta.step_done(step, now=at)
        if step >= 2:
            actual = end - at
            assert abs(eta.seconds_left(step) - actual) <= 0.5 * actual + 0.05, (step, eta.seconds_left(step), actual)
    # against the steps alone, which leave the decode out: at step 2 that says 0.75 s of the 1.66 s left
    assert StepEta(total=7, marks={1: 5.5, 2: 5.65}).seconds_left(2) == 0.8


def test_an_eta_from_the_first_step_alone_is_never_given():
    # the bug: a first step timed with the face analysis and warm-up read "about 63 s left" on a
    # job that ended 17 s later
    eta = StepEta(total=7, previous=_timeline(MEASURED, MEASURED_END))
    eta.step_done(1, now=63.0)
    assert eta.seconds_left(1) is None


class RecordingStore(JobStore):
    """The real store, keeping every progress write it was asked for."""

    def __init__(self, inner: JobStore) -> None:
        super().__init__(inner.client, inner.retention_s)
        self.writes: list[dict] = []

    def set_progress(self, request_id, step, total, stage=None, eta_s=None) -> bool:
        self.writes.append({"step": step, "total": total, "stage": stage, "eta_s": eta_s})
        return super().set_progress(request_id, step, total, stage=stage, eta_s=eta_s)


@pytest.fixture
def store_storage(settings, redis_client):
    storage = Storage.from_settings(settings)
    storage.ensure_buckets()
    return RecordingStore(JobStore.from_settings(settings)), storage


@pytest.mark.integration
def test_the_record_walks_through_the_stages_with_an_eta(store_storage):
    store, storage = store_storage
    rid = queued_job(store, storage)
    record = run_job(rid, EngineStandIn(steps=3), store, storage, deadline_s=60)
    stages = [w["stage"] for w in store.writes]
    assert stages == ["analyzing_face", "denoising", "denoising", "denoising", "uploading"]
    denoise = [w for w in store.writes if w["stage"] == "denoising"]
    assert [w["step"] for w in denoise] == [1, 2, 3]
    # no estimate from the first step alone, then one that shrinks to the end
    assert denoise[0]["eta_s"] is None and 0 <= denoise[2]["eta_s"] <= denoise[1]["eta_s"]
    # the job's total, as the pipeline counts it, known from the first status on and never changed
    assert {w["total"] for w in store.writes} == {3}
    # the finished record keeps the last progress: the upload after the last step
    assert record.progress.stage == JobStage.UPLOADING and (record.progress.step, record.progress.total) == (3, 3)


@pytest.mark.integration
def test_status_shows_the_stage_while_running(store_storage):
    from shared.jobs.record import JobStatus
    from shared.jobs.views import status_view

    store, storage = store_storage
    rid = queued_job(store, storage)
    store.transition(rid, JobStatus.RUNNING, worker="w")
    store.set_progress(rid, 2, 8, stage=JobStage.DENOISING.value, eta_s=1.5)
    view = status_view(store.get(rid), "http://h")
    assert view["progress"] == {"step": 2, "total": 8, "stage": "denoising", "eta_s": 1.5}
