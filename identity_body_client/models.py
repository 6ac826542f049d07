"""Typed views of the API's JSON: a job's status and its result (the seed's response shape).

Plain dataclasses built from the JSON the server sends; unknown keys are ignored, so a newer server
does not break an older client.

Example::

    job = Job.from_json(resp.json())
    job.status is JobStatus.QUEUED, job.queue_position
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class JobStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED)


@dataclass(frozen=True)
class Progress:
    step: int
    total: int


@dataclass(frozen=True)
class JobError:
    code: str      # stable machine code, e.g. "no_face_detected"
    message: str   # a sentence a person can act on

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> JobError | None:
        return None if not data else cls(code=str(data.get("code")), message=str(data.get("message", "")))


@dataclass(frozen=True)
class Job:
    """A job as the submit answer or its status URL describes it."""

    request_id: str
    status: JobStatus
    status_url: str | None = None
    result_url: str | None = None
    cancel_url: str | None = None
    queue_position: int | None = None
    progress: Progress | None = None
    error: JobError | None = None
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any], status_url: str | None = None) -> Job:
        progress = data.get("progress")
        return cls(
            request_id=data["request_id"], status=JobStatus(data["status"]),
            status_url=data.get("status_url") or status_url, result_url=data.get("result_url"),
            cancel_url=data.get("cancel_url"), queue_position=data.get("queue_position"),
            progress=Progress(int(progress["step"]), int(progress["total"])) if progress else None,
            error=JobError.from_json(data.get("error")), created_at=data.get("created_at"),
            started_at=data.get("started_at"), finished_at=data.get("finished_at"),
        )


@dataclass(frozen=True)
class ResultImage:
    id: str    # identity_body_0, identity_body_1, ...
    url: str   # presigned (or CDN) URL of the image; expires
    content_type: str = "image/png"     # the job's output_format: image/png, image/jpeg or image/webp
    file_name: str | None = None        # identity_body_0.png / .jpg / .webp
    identity_score: float | None = None
    below_threshold: bool = False
    nsfw: bool | None = None            # None: the server's safety check was off

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ResultImage:
        return cls(id=data["id"], url=data["url"], content_type=data.get("content_type", "image/png"),
                   file_name=data.get("file_name"), identity_score=data.get("identity_score"),
                   below_threshold=bool(data.get("below_threshold", False)), nsfw=data.get("nsfw"))


@dataclass(frozen=True)
class Result:
    """The seed's response shape. ``success`` is False for a failed or canceled job, with ``error``."""

    success: bool
    request_id: str
    count: int
    images: list[ResultImage] = field(default_factory=list)
    analysis: dict[str, Any] = field(default_factory=dict)
    method: str = "instantid"
    note: str | None = None
    error: JobError | None = None
    parts: list[str] = field(default_factory=list)
    identity_judge: str | None = None       # the recognizer that computed each identity_score
    safety_check: str | None = None         # the detector that screened the images, or "off"
    face_image_count: int | None = None     # how many face photos the identity was combined from
    keypoints_face_image: int | None = None  # which of them (1-based) laid out the face
    base_model: str | None = None           # the base checkpoint that made the images
    pose_source: str | None = None          # "photo" (the job's pose_image) or the pose template's name

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Result:
        return cls(
            success=bool(data["success"]), request_id=data["request_id"], count=int(data.get("count", 0)),
            images=[ResultImage.from_json(im) for im in data.get("images", [])],
            analysis=dict(data.get("analysis") or {}), method=data.get("method", "instantid"),
            note=data.get("note"), error=JobError.from_json(data.get("error")), parts=list(data.get("parts") or []),
            identity_judge=data.get("identity_judge"), safety_check=data.get("safety_check"),
            face_image_count=data.get("face_image_count"), keypoints_face_image=data.get("keypoints_face_image"),
            base_model=data.get("base_model"),
            pose_source=data.get("pose_source"),
        )
