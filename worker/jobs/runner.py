"""One generation job, from its record to its finished record. Plain functions: the Celery task in
``worker.jobs.tasks`` only wires them to the resident pipeline, the job store and storage.

Every way a job can end goes through ``finish_job``, the single place that writes a finished
record (and, later, hands the job to the webhook sender and the upload retention).

Example::

    run_job(request_id, pipeline, store, storage, deadline_s=540)
"""

from __future__ import annotations

import io
import logging
import os
import socket
import time
from typing import Any, Protocol

from PIL import Image

from shared.errors import ErrorCode, IdentityBodyError
from shared.jobs.progress import JobStage, StepEta
from shared.jobs.record import (
    JobError,
    JobRecord,
    JobResult,
    JobStatus,
    ResultImage,
    result_image_id,
)
from shared.output_formats import encode_image
from shared.params import GenerationParams, parse_params
from shared.transient import is_transient
from worker.jobs.transient_retry import TransientRetry

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "The worker hit an unexpected error while generating; please try again later."
OOM_MESSAGE = "The GPU ran out of memory for this job; try fewer images or a smaller size."
TIMEOUT_MESSAGE = "Generation took longer than the worker's time limit; try fewer steps or a smaller size."
UNAVAILABLE_MESSAGE = "The job store or image store stayed unreachable for too long; please submit the job again."
STORE, IMAGES = "the job store", "the image store"


class JobPipeline(Protocol):
    """What the runner asks of the resident pipeline (worker.identity_pipeline.IdentityPipeline)."""

    def total_steps(self, params: GenerationParams) -> int:
        """Every denoise step ``generate`` will report for ``params``."""

    def generate(self, face_image: list[Image.Image], params: GenerationParams, *,
                 progress: ProgressWriter | None = None, pose_image: Image.Image | None = None) -> dict[str, Any]:
        """Images, per-image entries, analysis, method, profile, note, parts (the seed's result)."""


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def finish_job(
    store: Any,
    request_id: str,
    status: JobStatus,
    *,
    result: JobResult | None = None,
    error: JobError | None = None,
) -> JobRecord | None:
    """Move a job to a finished state, once. Returns the finished record, or None when the record
    was already finished (a duplicate or late write loses; the guard lives in the store).

    Example::

        finish_job(store, rid, JobStatus.FAILED, error=JobError(code="no_face_detected", message="..."))
    """
    fields: dict[str, Any] = {}  # the store stamps finished_at
    if result is not None:
        fields["result"] = result
    if error is not None:
        fields["error"] = error
    record = store.transition(request_id, status, **fields)
    if record is None:
        log.info("job %s was already finished; %s not recorded", request_id, status.value)
        return None
    log.info("job %s finished %s%s", request_id, status.value, f" ({error.code})" if error else "",
             extra={"event": "job.finished", "status": status.value, "error_code": error.code if error else None,
                    "duration_s": _seconds(record.started_at, record.finished_at)})
    return record


def _seconds(start: float | None, end: float | None) -> float | None:
    return round(end - start, 3) if start is not None and end is not None else None


def start_job(store: Any, record: JobRecord) -> JobRecord | None:
    """queued|running -> running; the store counts the attempt (a redelivered task makes it 2) and
    stamps started_at."""
    return store.transition(record.request_id, JobStatus.RUNNING, worker=worker_name())


# this worker's last finished job's step clock, per progress total: the next job's time left
# follows its shape (shared.jobs.progress.StepEta)
LAST_STEP_CLOCKS: dict[int, StepEta] = {}


class ProgressWriter:
    """The per-step callback: records progress with its stage and ETA, stops a canceled job
    (returns False), and enforces the soft time limit itself because Celery's time limits do not
    apply to the solo or threads pools. ``stage()`` records the stages that have no steps."""

    def __init__(self, store: Any, request_id: str, deadline: float) -> None:
        from worker.metrics import process_metrics

        self.store, self.request_id, self.deadline = store, request_id, deadline
        self.step_timer = process_metrics()
        self.eta: StepEta | None = None
        self.last = (0, 0)  # the step and total reported last, kept by the stages without steps

    def stage(self, stage: JobStage) -> None:
        # advisory: a canceled job is stopped by the next denoise step, not here
        if stage is JobStage.UPLOADING and self.eta is not None:
            self.eta.end()
            self.eta.previous = None  # keep one job's clock per total, not a chain of them
            LAST_STEP_CLOCKS[self.eta.total] = self.eta  # the next job of this total estimates from it
        self._write(*self.last, stage=stage.value)

    def _write(self, step: int, total: int, **fields: Any) -> bool:
        try:
            return bool(self.store.set_progress(self.request_id, step, total, **fields))
        except Exception as exc:
            if is_transient(exc):  # progress is advisory: Redis down must not stop the generation
                return True
            raise

    def __call__(self, step: int, total: int, stage: JobStage | str = JobStage.DENOISING) -> bool:
        if time.monotonic() > self.deadline:
            raise IdentityBodyError(ErrorCode.GENERATION_TIMEOUT, TIMEOUT_MESSAGE)
        self.step_timer.step_done()
        self.last = (step, total)
        stage = JobStage(stage)
        if self.eta is None or self.eta.total != total:
            self.eta = StepEta(total=total, previous=LAST_STEP_CLOCKS.get(total))
        self.eta.step_done(step)
        eta_s = self.eta.seconds_left(step)
        # the store writes progress only while the job runs: False means canceled (or purged)
        return self._write(step, total, stage=stage.value, eta_s=eta_s)

    def start(self, total: int) -> None:
        """The job starts: the face is analysed first."""
        self.last = (0, total)
        self.stage(JobStage.ANALYZING_FACE)


def progress_writer(store: Any, request_id: str, deadline: float) -> ProgressWriter:
    return ProgressWriter(store, request_id, deadline)


def generate_job_result(record: JobRecord, pipeline: JobPipeline, storage: Any, on_step: ProgressWriter,
                        retry: TransientRetry | None = None) -> JobResult:
    """Fetch the uploads (the face photos, the optional pose photo), generate (the stages of
    ``IdentityPipeline.generate``: face analysis, layout, base generation, face-detail pass,
    identity score and re-rank, safety check), upload the images in the job's output format; returns the JobResult to store, each image with its score,
    its safety verdict and what the face-detail pass did to it.
    Storage calls go through ``retry``: an S3 outage delays them rather than failing the job."""
    retry = retry or TransientRetry(None, record.request_id, window_s=0)
    params = parse_params(record.params)
    on_step.start(pipeline.total_steps(params))  # the job's total, the same from the first status on
    photos = [_fetch_photo(retry, storage, key) for key in record.face_upload_keys]
    pose = _fetch_photo(retry, storage, record.pose_upload_key) if record.pose_upload_key else None
    out = pipeline.generate(photos, params, progress=on_step, pose_image=pose)
    on_step.stage(JobStage.UPLOADING)
    details = out.get("image_details") or [{} for _ in out["images"]]
    observe_identity_scores(details)
    images = []
    for index, (image, detail) in enumerate(zip(out["images"], details)):
        encoded = encode_image(image, params.output_format, params.output_quality)
        key = retry.call(IMAGES, storage.put_result, record.request_id, index, encoded.data,
                         encoded.content_type, encoded.extension)
        images.append(ResultImage(id=result_image_id(index), key=key, width=image.width, height=image.height,
                                  content_type=encoded.content_type, **detail))
    return JobResult(images=images, analysis=out.get("analysis") or {}, method=out.get("method", "instantid"),
                     profile=out.get("profile"), note=out.get("note"), parts=list(out.get("parts") or []),
                     identity_judge=out.get("identity_judge"),
                     identity_judge_independent=out.get("identity_judge_independent"),
                     safety_check=out.get("safety_check"), face_image_count=out.get("face_image_count"),
                     keypoints_face_image=out.get("keypoints_face_image"), base_model=out.get("base_model"),
                     pose_source=out.get("pose_source"))


def _fetch_photo(retry: TransientRetry, storage: Any, key: str) -> Image.Image:
    return Image.open(io.BytesIO(retry.call(IMAGES, storage.get_upload, key))).convert("RGB")


def observe_identity_scores(details: list[dict[str, Any]]) -> None:
    """Feed the returned images' identity scores to the worker's histogram."""
    from worker.metrics import process_metrics

    for detail in details:
        if "face_found" in detail:
            process_metrics().identity_scored(detail.get("identity_score"))


def error_for(exc: BaseException) -> JobError:
    """The stable code and message a job failure is recorded with. Details stay in the log."""
    if isinstance(exc, IdentityBodyError):
        return JobError(code=exc.code.value, message=exc.message, field=exc.field)
    if _is_cuda_oom(exc):
        return JobError(code=ErrorCode.OUT_OF_MEMORY.value, message=OOM_MESSAGE)
    if type(exc).__name__ == "SoftTimeLimitExceeded":
        return JobError(code=ErrorCode.GENERATION_TIMEOUT.value, message=TIMEOUT_MESSAGE)
    if is_transient(exc):  # only once the retry window ran out
        return JobError(code=ErrorCode.SERVICE_UNAVAILABLE.value, message=UNAVAILABLE_MESSAGE)
    return JobError(code=ErrorCode.INTERNAL_ERROR.value, message=INTERNAL_MESSAGE)


def run_job(request_id: str, pipeline: JobPipeline, store: Any, storage: Any, deadline_s: float,
            retry_window_s: float = 0.0) -> JobRecord | None:
    """Run one job to a finished record; never raises for a job failure so the worker keeps serving.
    Redis and S3 calls are retried for up to ``retry_window_s`` while they fail transiently.

    Returns the finished record, or None when there was nothing to do (unknown id, already finished).
    """
    retry = TransientRetry(store, request_id, retry_window_s)
    record = retry.call(STORE, store.get, request_id)
    if record is None:
        log.warning("job %s has no record (expired or purged); skipping", request_id)
        # a record that expired while queued leaves its place in the queue order behind: without
        # this every later job's queue position and the queued-jobs metric count it for ever
        retry.call(STORE, store.delete, request_id)
        return None
    if record.status.finished:
        log.info("job %s is already %s; redelivery ignored", request_id, record.status.value)
        return None
    running = retry.call(STORE, start_job, store, record)
    if running is None:
        log.info("job %s could not start (finished meanwhile)", request_id)
        return None
    log.info("job %s started (attempt %d)", request_id, running.attempts,
             extra={"event": "job.started", "status": running.status.value, "attempt": running.attempts,
                    "queue_wait_s": _seconds(running.created_at, running.started_at)})
    on_step = progress_writer(store, request_id, time.monotonic() + deadline_s)
    try:
        result = generate_job_result(running, pipeline, storage, on_step, retry)
    except Exception as exc:  # every failure ends the job, never the worker; SystemExit still stops it
        return fail_job(store, request_id, exc, retry)
    return retry.call(STORE, finish_job, store, request_id, JobStatus.SUCCEEDED, result=result)


def fail_job(store: Any, request_id: str, exc: Exception, retry: TransientRetry | None = None) -> JobRecord | None:
    """Finish a job from the exception that stopped it (canceled, or failed with its stable code)."""
    error = error_for(exc)
    if error.code == ErrorCode.JOB_CANCELED.value:
        return finish_job(store, request_id, JobStatus.CANCELED, error=error)
    if error.code == ErrorCode.INTERNAL_ERROR.value:
        log.exception("job %s failed with an unexpected error", request_id)
    else:
        log.info("job %s failed: %s", request_id, type(exc).__name__)
    if error.code == ErrorCode.OUT_OF_MEMORY.value:
        _free_cuda_cache()
    retry = retry or TransientRetry(store, request_id, window_s=0)
    return retry.call(STORE, finish_job, store, request_id, JobStatus.FAILED, error=error)


def _is_cuda_oom(exc: BaseException) -> bool:
    if type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and "CUDA out of memory" in str(exc)


def _free_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
