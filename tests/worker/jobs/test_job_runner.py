"""The worker's job runner against real Valkey and SeaweedFS: every way a job ends, and the pure
decisions around it (profile choice, celery arguments, broker options)."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from PIL import Image

from idbody.stack.polling import until
from shared.celery_app import broker_transport_options, make_celery
from shared.errors import ErrorCode, IdentityBodyError
from shared.jobs.record import JobRecord, JobStatus
from shared.jobs.store import JOB_KEY, JobStore
from shared.storage import Storage
from worker.jobs.runner import error_for, run_job
from worker.models.profile import decide
from worker.run_cli import celery_argv


class EngineStandIn:
    """Plays the engine's generate() contract (images, progress per step, typed errors) so the
    runner's bookkeeping can be checked without loading diffusers; the real engine runs in
    tests/e2e/test_service_e2e.py."""

    def __init__(self, fail: BaseException | None = None, steps: int = 3) -> None:
        self.fail, self.steps, self.calls = fail, steps, 0

    def total_steps(self, params):
        return self.steps

    def generate(self, face_image, params, progress=None, pose_image=None):
        self.calls += 1
        num_images, width, height = params.num_images, params.width, params.height
        for step in range(1, self.steps + 1):
            if progress is not None and progress(step, self.steps) is False:
                raise IdentityBodyError(ErrorCode.JOB_CANCELED, "The job was canceled.")
            if self.fail is not None and step == 2:
                raise self.fail
        images = [Image.new("RGB", (width, height), (i * 40, 0, 0)) for i in range(num_images)]
        # the pipeline's per-image entries: the first image scored, the others without a face
        details = [{"identity_score": 0.75 if i == 0 else None, "face_found": i == 0,
                    "below_threshold": i > 0, "seed": 40 + i} for i in range(num_images)]
        return {"images": images, "image_details": details, "analysis": {"face": {"bbox": [0, 0, 1, 1]}},
                "method": "instantid", "profile": "tiny", "note": None}


@pytest.fixture
def store_storage(settings, redis_client):
    store, storage = JobStore.from_settings(settings), Storage.from_settings(settings)
    storage.ensure_buckets()
    return store, storage


def queued_job(store, storage, **params) -> str:
    rid = f"r{time.time_ns()}"
    buf = io.BytesIO()
    Image.new("RGB", (96, 96), (200, 180, 160)).save(buf, format="PNG")
    key = storage.put_upload(rid, buf.getvalue(), "image/png")
    store.create(JobRecord(request_id=rid, created_at=time.time(), upload_key=key,
                           params={"num_images": 2, "width": 64, "height": 64, **params}))
    return rid


def test_success_uploads_images_and_records_progress(store_storage):
    store, storage = store_storage
    rid = queued_job(store, storage)
    record = run_job(rid, EngineStandIn(), store, storage, deadline_s=60)
    assert record.status == JobStatus.SUCCEEDED and record.attempts == 1
    assert (record.progress.step, record.progress.total) == (3, 3)
    assert [img.width for img in record.result.images] == [64, 64]
    assert [(img.identity_score, img.face_found, img.below_threshold, img.seed) for img in record.result.images] == [
        (0.75, True, False, 40), (None, False, True, 41)]
    assert record.result.profile == "tiny"
    for img in record.result.images:
        body = storage.client.get_object(Bucket=storage.results_bucket, Key=img.key)["Body"].read()
        assert Image.open(io.BytesIO(body)).size == (64, 64)


def test_redelivery_after_success_does_nothing(store_storage):
    store, storage = store_storage
    rid = queued_job(store, storage)
    engine = EngineStandIn()
    run_job(rid, engine, store, storage, deadline_s=60)
    assert run_job(rid, engine, store, storage, deadline_s=60) is None
    assert engine.calls == 1 and store.get(rid).attempts == 1


def test_a_job_whose_record_expired_while_queued_gives_its_place_back(store_storage, redis_client):
    """A job still queued ``job_retention_s`` after its submit is dropped (its record expires);
    when the worker then reaches its task, the job's place in the queue order goes too."""
    store, storage = store_storage
    rid, behind = queued_job(store, storage), queued_job(store, storage)
    assert store.queue_position(behind) == 2
    redis_client.pexpire(JOB_KEY.format(rid), 1)  # what a retention shorter than the wait does
    until(lambda: store.get(rid) is None, 30, "the record to expire")
    assert run_job(rid, EngineStandIn(), store, storage, deadline_s=60) is None
    assert store.queue_position(rid) is None and store.queue_position(behind) == 1
    assert store.queued_count() == 1

@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (IdentityBodyError(ErrorCode.NO_FACE_DETECTED, "No face was found."), "no_face_detected"),
        (ValueError("secret internal detail"), "internal_error"),
    ],
)
def test_failures_end_the_job_with_a_stable_code(store_storage, exc, code):
    store, storage = store_storage
    rid = queued_job(store, storage)
    record = run_job(rid, EngineStandIn(fail=exc), store, storage, deadline_s=60)
    assert record.status == JobStatus.FAILED and record.error.code == code
    assert "secret internal detail" not in record.error.message
    # the next job on the same engine still succeeds
    assert run_job(queued_job(store, storage), EngineStandIn(), store, storage, deadline_s=60).status == "succeeded"


def test_cuda_oom_and_soft_time_limit_map_to_their_codes():
    import torch
    from billiard.exceptions import SoftTimeLimitExceeded

    assert error_for(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate")).code == "out_of_memory"
    assert error_for(SoftTimeLimitExceeded()).code == "generation_timeout"


def test_deadline_passed_fails_with_generation_timeout(store_storage):
    store, storage = store_storage
    rid = queued_job(store, storage)
    record = run_job(rid, EngineStandIn(), store, storage, deadline_s=-1)
    assert record.error.code == "generation_timeout"


def test_a_job_canceled_while_running_stops_at_the_next_step(store_storage):
    store, storage = store_storage
    rid = queued_job(store, storage)

    class CancelAtStep2(EngineStandIn):
        def generate(self, face_image, params, progress=None, pose_image=None):
            def wrapped(step, total):
                if step == 2:
                    store.transition(rid, JobStatus.CANCELED)
                return progress(step, total)
            return super().generate(face_image, params, progress=wrapped)

    assert run_job(rid, CancelAtStep2(), store, storage, deadline_s=60) is None  # cancel already won
    final = store.get(rid)
    assert final.status == JobStatus.CANCELED and final.result is None
    listed = storage.client.list_objects_v2(Bucket=storage.results_bucket, Prefix=f"{rid}/")
    assert listed.get("KeyCount", 0) == 0


def test_profile_decision():
    m, t = Path("models"), Path("tiny")
    assert decide("auto", True, True, m, t).profile == "instantid"
    no_gpu = decide("auto", True, False, m, t)
    assert no_gpu.profile == "tiny" and "no GPU" in no_gpu.reason and "random-weight" in no_gpu.reason
    assert "models missing" in decide("auto", False, True, m, t).reason
    assert decide("instantid", False, False, m, t).profile == "instantid"


def test_auto_profile_is_tiny_when_the_model_folder_does_not_verify(settings, tmp_path):
    from worker.models.profile import choose_profile, model_folder_verifies
    from worker.tiny.model_dir import build_tiny_model_dir

    assert model_folder_verifies(tmp_path / "absent") is False
    tiny = build_tiny_model_dir(settings.tiny_model_dir)
    assert model_folder_verifies(tiny) is False  # tiny files are not the released ones
    choice = choose_profile(settings.model_copy(update={"model_profile": "auto", "model_dir": tmp_path}))
    assert choice.profile == "tiny" and "models missing" in choice.reason


def test_gpu_worker_arguments_keep_the_guarantees(settings):
    argv = celery_argv("gpu", None, None, "INFO")
    assert argv[argv.index("--pool") + 1] == "solo"
    assert argv[argv.index("--concurrency") + 1] == "1"
    assert argv[argv.index("--prefetch-multiplier") + 1] == "1"
    with pytest.raises(SystemExit):
        celery_argv("gpu", 2, None, "INFO")
    # micro-batching: one process still, its jobs in threads, each message reserved one at a time
    batching = celery_argv("gpu", None, None, "INFO", gpu_slots=8)
    assert batching[batching.index("--pool") + 1] == "threads"
    assert batching[batching.index("--concurrency") + 1] == "8"
    assert batching[batching.index("--prefetch-multiplier") + 1] == "1"
    conf = make_celery(settings).conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost and conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options["visibility_timeout"] > conf.task_time_limit
    assert broker_transport_options(8)["unacked_restore_interval"] == 2
