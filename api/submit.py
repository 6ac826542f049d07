"""The submit path, top to bottom: (1) check the uploads and the fields, (2) admit (webhook URL,
idempotent replay, the key's cap), (3) store the uploads, (4) write the queued record, (5) enqueue
the GPU task. A failing step undoes what the earlier ones did, so nothing is ever half-accepted.
The request id is made here, once (``new_request_id``).

Example::

    form = await read_submit_form(request, settings.max_upload_bytes)
    submitted = submit_job(ctx, form, key, idempotency_key)
    submitted.record, submitted.queue_position, submitted.replayed
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import redis
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from api.base_models import check_base_model
from api.decode_budget import DecodeBudget, Unbounded
from api.strict_form import parse_multipart
from api.upload import FIELD as IMAGE_FIELD
from api.upload import NormalizedImage, check_size, normalize_uploads, reported_as
from shared.errors import ErrorCode, IdentityBodyError
from shared.face_images import MAX_FACE_IMAGES, about_photo, check_count
from shared.jobs.record import JobRecord, JobStatus
from shared.jobs.store import JobStore
from shared.params import GenerationParams, parse_params
from shared.queues import GENERATE_TASK, GPU_QUEUE
from shared.size_presets import size_defaults
from shared.storage import POSE_UPLOAD, Storage, face_upload_name
from shared.tracing import span, trace_headers
from shared.url_guard import parse_webhook_url

log = logging.getLogger(__name__)

WEBHOOK_FIELD = "webhook_url"
POSE_FIELD = "pose_image"
# the file fields a form may carry, and how many of each: each photo may be max_upload_bytes
FILE_FIELDS = {IMAGE_FIELD: MAX_FACE_IMAGES, POSE_FIELD: 1}
# room for the text fields and multipart framing around the photos
_FORM_OVERHEAD_BYTES = 64 * 1024
_READ_CHUNK = 256 * 1024
# the form has ~20 short text fields (the longest, webhook_url, is at most 2 KiB) and the files of
# FILE_FIELDS: these bound what a hostile form can make the parser hold (each file keeps at most
# 1 MiB in memory, the rest on disk). Up to twice as many files still parse, so a few too many are
# refused by name (too_many_face_images: shared.face_images.check_count; a second pose_image); past
# that the parser refuses the form (invalid_parameter).
_MAX_FORM_FIELDS = 32
_MAX_FORM_FILES = 2 * sum(FILE_FIELDS.values())
_MAX_FIELD_BYTES = 16 * 1024
# a failed enqueue answers 503 quickly instead of hanging on a broker that is down
_ENQUEUE_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}


@dataclass(frozen=True)
class AcceptedJob:
    record: JobRecord
    queue_position: int  # 1-based, as of the record write (before the task was enqueued)


@dataclass(frozen=True)
class Submitted:
    record: JobRecord
    queue_position: int | None
    replayed: bool  # an earlier request with the same Idempotency-Key and body created the job


@dataclass(frozen=True)
class SubmitContext:
    """What the submit path talks to (built once per gateway process, in its lifespan)."""
    settings: Any
    store: JobStore
    storage: Storage
    celery: Any
    admission: Any  # api.admission.Admission
    decode_budget: DecodeBudget | Unbounded = field(default_factory=Unbounded)  # decode memory per process


def form_files() -> int:
    """The most photos one submit form carries (the body limit allows that many photos' bytes)."""
    return sum(FILE_FIELDS.values())


def new_request_id() -> str:
    """The one place a job's id is made."""
    return str(uuid.uuid4())


def submit_job(ctx: SubmitContext, form: "SubmitForm", key: Any, idempotency_key: str | None) -> Submitted:
    """Steps 1-5 for one parsed form (blocking: run it in the threadpool)."""
    settings = ctx.settings
    # 1. check the fields and the upload (ranges in shared.params; image checks in api.upload)
    params, form_webhook_url = parse_submit_fields(form.fields, defaults=size_defaults(settings))
    check_base_model(ctx.store, params)
    images = check_photos(ctx, form.images)
    with reported_as(POSE_FIELD):
        pose = check_photos(ctx, [form.pose_image])[0] if form.pose_image is not None else None
    # 2. admit: the webhook URL, an idempotent replay, the key's cap on unfinished jobs
    webhook_url = ctx.admission.webhook_url_for(key, form_url=form_webhook_url)
    admitted = ctx.admission.admit(key, idempotency_key, form.fields, form.images, new_request_id(),
                                   pose_upload=form.pose_image)
    if admitted.replay is not None:
        return Submitted(admitted.replay, ctx.store.queue_position(admitted.request_id), replayed=True)
    # 3-5. store the uploads, write the queued record, enqueue the task
    try:
        accepted = accept_job(ctx.store, ctx.storage, ctx.celery, params, images, webhook_url=webhook_url,
                              owner=admitted.owner, request_id=admitted.request_id, pose=pose)
    except BaseException:
        ctx.admission.release(admitted)
        raise
    ctx.admission.accepted(accepted.record)
    return Submitted(accepted.record, accepted.queue_position, replayed=False)


def check_photos(ctx: SubmitContext, photos: list[bytes]) -> list[NormalizedImage]:
    """The upload checks of ``api.upload`` with this deployment's limits, for each photo in order."""
    settings = ctx.settings
    return normalize_uploads(photos, settings.max_upload_bytes, settings.max_image_pixels, settings.min_image_side,
                             max_decode_bytes=settings.max_decode_bytes, max_jpeg_pixels=settings.max_jpeg_pixels,
                             budget=ctx.decode_budget)


@dataclass(frozen=True)
class SubmitForm:
    fields: list[tuple[str, str]]  # every non-file field, in order, duplicates kept
    images: list[bytes]  # the face photos, in the order sent (1 to MAX_FACE_IMAGES)
    pose_image: bytes | None = None  # the optional photo of anyone in the wanted pose


async def read_submit_form(request: Request, max_upload_bytes: int) -> SubmitForm:
    """Parse the multipart body; read each ``face_image`` (and the ``pose_image``) in chunks and
    stop one byte past the cap."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_upload_bytes * form_files() + _FORM_OVERHEAD_BYTES:
        check_size(int(length), max_upload_bytes)  # raises file_too_large before parsing
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise IdentityBodyError(
            ErrorCode.INVALID_PARAMETER,
            "Send the request as multipart/form-data with the photo in the file field 'face_image'.",
        )
    try:
        form = await parse_multipart(request, max_files=_MAX_FORM_FILES, max_fields=_MAX_FORM_FIELDS,
                                     max_part_size=_MAX_FIELD_BYTES)
    except MultiPartException as exc:  # malformed, too many fields or files, a field too long, not UTF-8
        raise IdentityBodyError(ErrorCode.INVALID_PARAMETER, f"The multipart form was refused: {exc.message}") from None
    fields: list[tuple[str, str]] = []
    uploads: list[UploadFile] = []
    pose_upload: UploadFile | None = None
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            if name not in FILE_FIELDS:
                raise IdentityBodyError(
                    ErrorCode.INVALID_PARAMETER, f"{name}: only 'face_image' and 'pose_image' may be files.",
                    field=name,
                )
            if name == IMAGE_FIELD:
                uploads.append(value)
            elif pose_upload is None:
                pose_upload = value
            else:
                raise IdentityBodyError(
                    ErrorCode.INVALID_PARAMETER, f"Send at most one '{name}' file.", field=name
                )
        elif name in FILE_FIELDS:
            raise IdentityBodyError(
                ErrorCode.INVALID_PARAMETER,
                f"{name} must be a file upload (curl: -F \"{name}=@photo.jpg\").",
                field=name,
            )
        else:
            fields.append((name, value))
    check_count(len(uploads))
    images = []
    for index, upload in enumerate(uploads):
        try:
            images.append(await _read_capped(upload, max_upload_bytes))
        except IdentityBodyError as exc:
            raise about_photo(exc, index, len(uploads)) from None
    pose = None
    if pose_upload is not None:
        with reported_as(POSE_FIELD):
            pose = await _read_capped(pose_upload, max_upload_bytes)
    await form.close()
    return SubmitForm(fields=fields, images=images, pose_image=pose)


async def _read_capped(upload: UploadFile, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await upload.read(_READ_CHUNK):
        size += len(chunk)
        if size > max_bytes:
            check_size(size, max_bytes)  # raises file_too_large
        chunks.append(chunk)
    return b"".join(chunks)


def parse_submit_fields(
    fields: list[tuple[str, str]], defaults: dict[str, Any] | None = None
) -> tuple[GenerationParams, str | None]:
    """Form fields → (GenerationParams, webhook_url). Empty values count as absent; a field sent
    twice or unknown is refused, naming it; ranges are checked once, by ``parse_params``.
    ``defaults`` (the deployment's, e.g. a small size) fill what the form leaves out.

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
    params = parse_params({**(defaults or {}), **data})
    return params, check_webhook_url(webhook_url) if webhook_url else None


def check_webhook_url(url: str) -> str:
    """Form check of a webhook URL (http or https, with a host; a malformed one is refused, never a
    500). Literal addresses are checked at admission, every address again at delivery."""
    parse_webhook_url(url.strip())
    return url.strip()


def accept_job(
    store: JobStore,
    storage: Storage,
    celery: Any,
    params: GenerationParams,
    images: list[NormalizedImage],
    *,
    request_id: str,
    webhook_url: str | None = None,
    owner: str | None = None,
    pose: NormalizedImage | None = None,
) -> AcceptedJob:
    """Steps 3-5: store the checked uploads (the face photos, the optional pose photo), write the
    queued record, enqueue the GPU task.

    A failure before the record exists leaves nothing behind (503); a failed enqueue after it
    exists deletes the record and the photos again (503), so no job waits forever for a task that
    was never queued.
    """
    # 3. store the uploads: the face photos in order, then the pose photo
    named = [(face_upload_name(index), image) for index, image in enumerate(images)]
    named += [(POSE_UPLOAD, pose)] if pose is not None else []
    upload_keys: list[str] = []
    try:
        for name, image in named:
            upload_keys.append(storage.put_upload(request_id, image.data, image.content_type, name=name))
    except Exception as exc:
        log.error("storing upload for %s failed: %s", request_id, type(exc).__name__)
        _forget_uploads(storage, upload_keys)
        raise _unavailable("The image store is unreachable; try again in a moment.") from None
    # 4. write the queued record
    record = JobRecord(
        request_id=request_id,
        params=params.model_dump(mode="json"),
        upload_key=upload_keys[0],
        upload_keys=upload_keys,
        pose_upload_key=upload_keys[-1] if pose is not None else None,
        owner=owner,
        webhook_url=webhook_url,
        created_at=time.time(),
    )
    try:
        position = store.create(record)
    except redis.RedisError as exc:
        log.error("writing job %s failed: %s", request_id, type(exc).__name__)
        _forget_uploads(storage, upload_keys)
        raise _unavailable("The job store is unreachable; try again in a moment.") from None
    # 5. enqueue the GPU task
    try:
        with span("idbody.submit", request_id=request_id):  # the gpu task continues this trace
            celery.send_task(GENERATE_TASK, args=[request_id], queue=GPU_QUEUE, task_id=request_id,
                             retry=True, retry_policy=_ENQUEUE_RETRY, headers=trace_headers())
    except Exception as exc:  # kombu raises transport-specific errors; all mean "not queued"
        log.error("enqueueing job %s failed: %s", request_id, type(exc).__name__)
        _forget_record(store, request_id)
        _forget_uploads(storage, upload_keys)
        raise _unavailable("The job queue is unreachable; the job was not started. Try again in a moment.") from None
    log.info("job %s queued at position %s", request_id, position,
             extra={"event": "job.submitted", "status": JobStatus.QUEUED.value, "request_id": request_id})
    return AcceptedJob(record, position)


def _forget_record(store: JobStore, request_id: str) -> None:
    """Undo a record whose task was never queued: the client gets 503 and no job exists. With Redis
    itself down this fails too; the record then expires unseen, and its key slot stops counting
    once the record is gone (shared.access.rate_limit)."""
    try:
        store.delete(request_id)
    except redis.RedisError as exc:
        log.warning("could not delete the unqueued job %s: %s", request_id, type(exc).__name__)


def _forget_uploads(storage: Storage, keys: list[str]) -> None:
    for key in keys:
        try:
            storage.delete_upload(key)
        except Exception as exc:  # the retention sweep removes it later
            log.warning("could not delete upload %s: %s", key, type(exc).__name__)


def _unavailable(message: str) -> IdentityBodyError:
    return IdentityBodyError(ErrorCode.SERVICE_UNAVAILABLE, message)
