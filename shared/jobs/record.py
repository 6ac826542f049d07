"""The job record and its state machine. Pure: no Redis here (see ``shared.jobs.store``).

A job moves only forward::

    queued ──▶ running ──▶ succeeded | failed | canceled
       └────────────────────────────▶ failed | canceled

Finished states are final: a late or duplicate write can never move a job backwards. The one
step back, running -> queued, is recovery rather than a transition: ``shared.jobs.reaper`` takes
it for a job whose worker's lease expired (the worker died), outside ``can_transition``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, model_validator


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED})

ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.FAILED, JobStatus.CANCELED}),
    # running -> running lets a redelivered task (worker died mid-job) take the job again
    JobStatus.RUNNING: frozenset({JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED}),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELED: frozenset(),
}


def can_transition(current: JobStatus | str, new: JobStatus | str) -> bool:
    """True when ``current -> new`` is a legal move.

    Example::

        can_transition("succeeded", "running")   # False
    """
    return JobStatus(new) in ALLOWED[JobStatus(current)]


class Progress(BaseModel):
    step: int = 0
    total: int = 0
    stage: str | None = None  # a shared.jobs.progress.JobStage value
    eta_s: float | None = None  # seconds left, from the step times measured on this job


class JobError(BaseModel):
    code: str
    message: str
    field: str | None = None


def result_image_id(index: int) -> str:
    """The id a result image has in the seed's response shape (and in ``idbody generate``'s files).

    Example::

        result_image_id(0)   # "identity_body_0"
    """
    return f"identity_body_{int(index)}"


class ResultImage(BaseModel):
    id: str
    key: str  # object key in the results bucket; URLs are made when read
    width: int
    height: int
    # likeness: cosine of the upload's face embedding and this image's largest face (None: no face)
    identity_score: float | None = None
    face_found: bool | None = None
    below_threshold: bool = False
    seed: int | None = None
    # the face-detail pass (worker.engine.face_detail): "applied" or "skipped" and why (no_face, off, ...)
    face_detail: str | None = None
    face_detail_reason: str | None = None
    content_type: str = "image/png"  # the stored object's type (the job's output_format)
    # the safety check's verdict (worker.safety.screen): True means a blurred copy is stored; None: check off
    nsfw: bool | None = None


class JobResult(BaseModel):
    images: list[ResultImage] = Field(default_factory=list)
    analysis: dict[str, Any] = Field(default_factory=dict)
    method: str = "instantid"
    profile: str | None = None  # "instantid" (released weights) or "tiny" (random weights)
    note: str | None = None
    parts: list[str] = Field(default_factory=list)  # what made the images (worker.engine.loading.Engine.parts)
    identity_judge: str | None = None  # the recognizer that computed identity_score (worker.face.judge)
    identity_judge_independent: bool | None = None  # False: the judge also conditioned the generation
    safety_check: str | None = None  # the detector that screened the images, or "off"
    face_image_count: int | None = None  # how many face photos the identity was combined from
    keypoints_face_image: int | None = None  # which of them (1-based) laid out the face's keypoints
    base_model: str | None = None  # the base checkpoint that made the images (worker.models.bases)
    pose_source: str | None = None  # "photo" (the job's pose_image) or the pose template's name


class WebhookAttempt(BaseModel):
    attempt: int
    at: float
    status_code: int | None = None
    error: str | None = None


class JobRecord(BaseModel):
    """One job, as stored under ``job:{request_id}``. Timestamps are Unix seconds."""

    request_id: str
    status: JobStatus = JobStatus.QUEUED
    params: dict[str, Any] = Field(default_factory=dict)
    upload_key: str | None = None  # the first face photo's object key
    # every upload's key: the face photos in the order sent, then the pose photo (when one was sent)
    upload_keys: list[str] = Field(default_factory=list)
    pose_upload_key: str | None = None  # the optional pose photo's key (also in upload_keys)
    owner: str | None = None  # API key id; None when auth is disabled
    webhook_url: str | None = None
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    progress: Progress = Field(default_factory=Progress)
    result: JobResult | None = None
    error: JobError | None = None
    attempts: int = 0  # how many times a worker took the job (redelivery makes it > 1)
    worker: str | None = None
    # why the job is waiting although it was taken ("retrying: ...", "requeued: ..."); None when not
    note: str | None = None
    requeued_at: float | None = None  # when the reaper last put it back in the queue
    webhook_attempts: list[WebhookAttempt] = Field(default_factory=list)

    @property
    def face_upload_keys(self) -> list[str]:
        """The keys of every face photo of the job, in the order sent."""
        return [key for key in self.upload_keys if key != self.pose_upload_key]

    @model_validator(mode="after")
    def _list_every_upload(self) -> JobRecord:
        # a record written before a job could store several photos has upload_key alone: listing it
        # (and a pose photo's key) here lets retention, purge and the worker read upload_keys alone
        if not self.upload_keys:
            self.upload_keys = [key for key in (self.upload_key, self.pose_upload_key) if key]
        return self
