"""Stable error codes. Raise ``IdentityBodyError`` deep; the HTTP edge and the job record turn it into
``{"error": {"code", "message", "field"}}`` once.

Example::

    raise IdentityBodyError(ErrorCode.NO_FACE_DETECTED,
                            "No face was found in the photo. Upload a well-lit, front-facing photo.")
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    # request and upload (4xx)
    INVALID_PARAMETER = "invalid_parameter"
    MISSING_FIELD = "missing_field"
    FILE_TOO_LARGE = "file_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    IMAGE_DECODE_FAILED = "image_decode_failed"
    IMAGE_TOO_LARGE = "image_too_large"
    IMAGE_TOO_SMALL = "image_too_small"
    ANIMATED_IMAGE = "animated_image"
    TOO_MANY_FACE_IMAGES = "too_many_face_images"
    UNAUTHORIZED = "unauthorized"
    REQUEST_TIMEOUT = "request_timeout"
    RATE_LIMITED = "rate_limited"
    TOO_MANY_STREAMS = "too_many_streams"
    STREAMS_FULL = "streams_full"
    TOO_MANY_QUEUED = "too_many_queued"
    IDEMPOTENCY_MISMATCH = "idempotency_mismatch"
    IDEMPOTENCY_IN_PROGRESS = "idempotency_in_progress"
    WEBHOOK_URL_REFUSED = "webhook_url_refused"
    JOB_NOT_FOUND = "job_not_found"
    JOB_NOT_FINISHED = "job_not_finished"
    JOB_ALREADY_FINISHED = "job_already_finished"
    UNKNOWN_BASE_MODEL = "unknown_base_model"
    # face analysis
    NO_FACE_DETECTED = "no_face_detected"
    FACE_TOO_SMALL = "face_too_small"
    FACES_DIFFER = "faces_differ"
    # pose photo analysis
    NO_PERSON_IN_POSE_IMAGE = "no_person_in_pose_image"
    # engine and service
    MODELS_MISSING = "models_missing"
    OUT_OF_MEMORY = "out_of_memory"
    GENERATION_TIMEOUT = "generation_timeout"
    JOB_CANCELED = "job_canceled"
    SERVICE_UNAVAILABLE = "service_unavailable"
    INTERNAL_ERROR = "internal_error"
    # HTTP routing (no such path, wrong method)
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    # model management (CLI)
    MODEL_DOWNLOAD_FAILED = "model_download_failed"
    CHECKPOINT_NOT_FOUND = "checkpoint_not_found"
    NOT_SDXL_CHECKPOINT = "not_sdxl_checkpoint"
    BASE_MODEL_EXISTS = "base_model_exists"


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_PARAMETER: 422,
    ErrorCode.MISSING_FIELD: 422,
    ErrorCode.FILE_TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.IMAGE_DECODE_FAILED: 422,
    ErrorCode.IMAGE_TOO_LARGE: 413,
    ErrorCode.IMAGE_TOO_SMALL: 422,
    ErrorCode.ANIMATED_IMAGE: 422,
    ErrorCode.TOO_MANY_FACE_IMAGES: 422,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.REQUEST_TIMEOUT: 408,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.TOO_MANY_STREAMS: 429,
    ErrorCode.STREAMS_FULL: 503,
    ErrorCode.TOO_MANY_QUEUED: 429,
    ErrorCode.IDEMPOTENCY_MISMATCH: 422,
    ErrorCode.IDEMPOTENCY_IN_PROGRESS: 409,
    ErrorCode.WEBHOOK_URL_REFUSED: 422,
    ErrorCode.JOB_NOT_FOUND: 404,
    ErrorCode.JOB_NOT_FINISHED: 409,
    ErrorCode.JOB_ALREADY_FINISHED: 409,
    ErrorCode.UNKNOWN_BASE_MODEL: 422,
    ErrorCode.NO_FACE_DETECTED: 422,
    ErrorCode.FACE_TOO_SMALL: 422,
    ErrorCode.FACES_DIFFER: 422,
    ErrorCode.NO_PERSON_IN_POSE_IMAGE: 422,
    ErrorCode.MODELS_MISSING: 503,
    ErrorCode.OUT_OF_MEMORY: 503,
    ErrorCode.GENERATION_TIMEOUT: 504,
    ErrorCode.JOB_CANCELED: 409,
    ErrorCode.SERVICE_UNAVAILABLE: 503,
    ErrorCode.INTERNAL_ERROR: 500,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.MODEL_DOWNLOAD_FAILED: 502,
    ErrorCode.CHECKPOINT_NOT_FOUND: 404,
    ErrorCode.NOT_SDXL_CHECKPOINT: 422,
    ErrorCode.BASE_MODEL_EXISTS: 409,
}


class IdentityBodyError(Exception):
    """An error with a stable code and a sentence a person can act on."""

    def __init__(self, code: ErrorCode, message: str, field: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message
        self.field = field
        self.details = details

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code.value, "message": self.message, "field": self.field}
        if self.details:
            body["details"] = self.details
        return body

    def __repr__(self) -> str:
        return f"IdentityBodyError({self.code.value!r}, {self.message!r}, field={self.field!r})"
