"""A running job's stage and ETA: the pure estimate, and what the runner writes into the record on
a real Valkey, in order."""

from __future__ import annotations

import pytest

from shared.jobs.progress import JobStage, StepEta
from shared.jobs.store import JobStore
from shared.storage import Storage
from tests.worker.jobs.test_job_runner import EngineStandIn, queued_job
from worker.jobs.runner import run_job


def test_eta_is_steps_left_times_the_measured_step():
    eta = StepEta(total=8, started=100.0)
    assert eta.seconds_left(0) is None
    eta.step_done(now=102.0)  # the first step carries warm-up: 2 s
    assert eta.seconds_left(1) == 14.0
    eta.step_done(now=102.5)
    eta.step_done(now=103.0)  # from then on, the steps measured after it: 0.5 s each
    assert eta.seconds_left(3) == 2.5
    assert eta.seconds_left(8) == 0.0


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
    assert [w["step"] for w in denoise] == [1, 2, 3] and denoise[-1]["eta_s"] == 0.0
    assert all(w["eta_s"] is not None and w["eta_s"] >= 0 for w in denoise)
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
