"""Accepting a job: form fields → GenerationParams, upload → checked JPEG, then store the upload,
write the queued record and enqueue the GPU task, in that order, undoing what was done if a later
step fails so that nothing is ever half-accepted.

Example::

    form = await read_submit_form(request, settings)
    params, webhook_url = parse_submit_fields(form.fields)
    accepted = accept_job(store, storage, celery, params, image, webhook_url=webhook_url, owner=None)
    accepted.record, accepted.queue_position
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis
from starlette.datastructures import UploadFile
from starlette.requests import Request

from api.upload import FIELD as IMAGE_FIELD
from api.upload import NormalizedImage, check_size
from shared.errors import ErrorCode, IdentityBodyError
from shared.job_record import JobError, JobRecord, JobStatus
from shared.job_store import JobStore
from shared.params import GenerationParams, parse_params
from shared.queues import GENERATE_TASK, GPU_QUEUE
from shared.storage import Storage
from shared.tracing import span, trace_headers

log = logging.getLogger(__name__)

WEBHOOK_FIELD = "webhook_url"
# room for the text fields and multipart framing around the photo
_FORM_OVERHEAD_BYTES = 64 * 1024
_READ_CHUNK = 256 * 1024
# a failed enqueue answers 503 quickly instead of hanging on a broker that is down
_ENQUEUE_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}


@dataclass(frozen=True)
class AcceptedJob:
    record: JobRecord
    queue_position: int  # 1-based, as of the record write (before the task was enqueued)


@dataclass(frozen=True)
class SubmitForm:
    fields: list[tuple[str, str]]  # every non-file field, in order, duplicates kept
    image: bytes


async def read_submit_form(request: Request, max_upload_bytes: int) -> SubmitForm:
    """Parse the multipart body; read ``face_image`` in chunks and stop one byte past the cap."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_upload_bytes + _FORM_OVERHEAD_BYTES:
        check_size(int(length), max_upload_bytes)  # raises file_too_large before parsing
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise IdentityBodyError(
            ErrorCode.INVALID_PARAMETER,
            "Send the request as multipart/form-data with the photo in the file field 'face_image'.",
        )
    form = await request.form(max_files=4, max_fields=64)
    fields: list[tuple[str, str]] = []
    image: bytes | None = None
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            if name != IMAGE_FIELD:
                raise IdentityBodyError(
                    ErrorCode.INVALID_PARAMETER, f"{name}: only 'face_image' may be a file.", field=name
                )
            if image is not None:
                raise IdentityBodyError(
                    ErrorCode.INVALID_PARAMETER, "Send exactly one 'face_image' file.", field=IMAGE_FIELD
                )
            image = await _read_capped(value, max_upload_bytes)
        elif name == IMAGE_FIELD:
            raise IdentityBodyError(
                ErrorCode.INVALID_PARAMETER,
                "face_image must be a file upload (curl: -F \"face_image=@photo.jpg\").",
                field=IMAGE_FIELD,
            )
        else:
            fields.append((name, value))
    await form.close()
    if image is None:
        raise IdentityBodyError(
            ErrorCode.MISSING_FIELD,
            "Send the face photo as the multipart file field 'face_image'.",
            field=IMAGE_FIELD,
        )
    return SubmitForm(fields=fields, image=image)


async def _read_capped(upload: UploadFile, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await upload.read(_READ_CHUNK):
        size += len(chunk)
        if size > max_bytes:
            check_size(size, max_bytes)  # raises file_too_large
        chunks.append(chunk)
    return b"".join(chunks)


def parse_submit_fields(fields: list[tuple[str, str]]) -> tuple[GenerationParams, str | None]:
    """Form fields → (GenerationParams, webhook_url). Empty values count as absent; a field sent
    twice or unknown is refused, naming it; ranges are checked once, by ``parse_params``.

    Example::

        parse_submit_fields([("height_cm", "170"), ("gender", "female")])
    """
    data: dict[str, Any] = {}
    for name, value in fields:
        if name in data:
            raise IdentityBodyError(ErrorCode.INVALID_PARAMETER, f"{name}: sent more than once.", field=name)
        if value.strip() != "":
            data[name] = value
    webhook_url = data.pop(WEBHOOK_FIELD, None)
    params = parse_params(data)
    return params, check_webhook_url(webhook_url) if webhook_url else None


def check_webhook_url(url: str) -> str:
    """Form check of a webhook URL (http or https, with a host). Address checks against SSRF
    happen here and again at delivery (webhooks work)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > 2048:
        raise IdentityBodyError(
            ErrorCode.WEBHOOK_URL_REFUSED, "webhook_url must be an http or https URL.", field=WEBHOOK_FIELD
        )
    return url.strip()


def accept_job(
    store: JobStore,
    storage: Storage,
    celery: Any,
    params: GenerationParams,
    image: NormalizedImage,
    *,
    webhook_url: str | None = None,
    owner: str | None = None,
    request_id: str | None = None,
) -> AcceptedJob:
    """Store the checked upload, write the queued record, enqueue the GPU task.

    A failure before the record exists leaves nothing behind (503); a failed enqueue after it
    exists marks the job failed with service_unavailable (503), so no job waits forever.
    """
    request_id = request_id or str(uuid.uuid4())
    try:
        upload_key = storage.put_upload(request_id, image.data, image.content_type)
    except Exception as exc:
        log.error("storing upload for %s failed: %s", request_id, type(exc).__name__)
        raise _unavailable("The image store is unreachable; try again in a moment.") from None
    record = JobRecord(
        request_id=request_id,
        params=params.model_dump(mode="json"),
        upload_key=upload_key,
        owner=owner,
        webhook_url=webhook_url,
        created_at=time.time(),
    )
    try:
        position = store.create(record)
    except redis.RedisError as exc:
        log.error("writing job %s failed: %s", request_id, type(exc).__name__)
        _forget_upload(storage, upload_key)
        raise _unavailable("The job store is unreachable; try again in a moment.") from None
    try:
        with span("idbody.submit", request_id=request_id):  # the gpu task continues this trace
            celery.send_task(GENERATE_TASK, args=[request_id], queue=GPU_QUEUE, task_id=request_id,
                             retry=True, retry_policy=_ENQUEUE_RETRY, headers=trace_headers())
    except Exception as exc:  # kombu raises transport-specific errors; all mean "not queued"
        log.error("enqueueing job %s failed: %s", request_id, type(exc).__name__)
        message = "The job queue is unreachable; the job was not started. Try again in a moment."
        store.transition(request_id, JobStatus.FAILED,
                         error=JobError(code=ErrorCode.SERVICE_UNAVAILABLE.value, message=message))
        _forget_upload(storage, upload_key)
        raise _unavailable(message) from None
    log.info("job %s queued at position %s", request_id, position,
             extra={"event": "job.submitted", "status": JobStatus.QUEUED.value, "request_id": request_id})
    return AcceptedJob(record, position)


def _forget_upload(storage: Storage, key: str) -> None:
    try:
        storage.delete_upload(key)
    except Exception as exc:  # the retention sweep removes it later
        log.warning("could not delete upload %s: %s", key, type(exc).__name__)


def _unavailable(message: str) -> IdentityBodyError:
    return IdentityBodyError(ErrorCode.SERVICE_UNAVAILABLE, message)
