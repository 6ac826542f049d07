"""Submit a job, read its status, read its result."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.deps import (
    ApiKeyDep,
    BaseUrlDep,
    CeleryDep,
    JobEndDep,
    OwnerDep,
    SettingsDep,
    StorageDep,
    StoreDep,
    SubmitDep,
)
from api.job_events import status_events
from api.job_watch import watcher_of
from api.prefer import wait_seconds
from api.schemas import (
    DeletedResponse,
    JobListResponse,
    JobResultResponse,
    JobStatusResponse,
    SubmitResponse,
    error_responses,
    submit_request_body,
)
from api.submit import read_submit_form, submit_job
from shared.errors import ErrorCode, IdentityBodyError
from shared.jobs import listing
from shared.jobs.record import JobError, JobRecord, JobStatus
from shared.jobs.store import JobStore
from shared.jobs.views import job_urls, result_view, status_view

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1", tags=["jobs"])
SUBMIT_PATH = "/api/v1/generate-identity-body"

RequestId = Annotated[str, Path(description="The request_id returned on submit.", max_length=128)]
PreferHeader = Annotated[str | None, Header(
    description="`wait=N` (or a bare `wait`: the server's longest): hold the request up to N seconds "
                "until the job ends. `Preference-Applied` says when the wait was honoured.")]

# Retry-After on answers about an unfinished job: how soon polling again is worth it
POLL_AFTER_S = 2
_ACCEPTED_HEADERS = {
    "Location": {"description": "The job's status URL.", "schema": {"type": "string"}},
    "Retry-After": {"description": "Seconds until polling the status is worth it.", "schema": {"type": "integer"}},
}

_SUBMIT_ERRORS = error_responses(
    ErrorCode.INVALID_PARAMETER, ErrorCode.MISSING_FIELD, ErrorCode.FILE_TOO_LARGE,
    ErrorCode.IMAGE_TOO_LARGE, ErrorCode.UNSUPPORTED_MEDIA_TYPE, ErrorCode.IMAGE_DECODE_FAILED,
    ErrorCode.IMAGE_TOO_SMALL, ErrorCode.ANIMATED_IMAGE, ErrorCode.TOO_MANY_FACE_IMAGES, ErrorCode.WEBHOOK_URL_REFUSED,
    ErrorCode.SERVICE_UNAVAILABLE, ErrorCode.UNAUTHORIZED, ErrorCode.RATE_LIMITED, ErrorCode.TOO_MANY_QUEUED,
    ErrorCode.IDEMPOTENCY_MISMATCH, ErrorCode.IDEMPOTENCY_IN_PROGRESS, ErrorCode.REQUEST_TIMEOUT,
    ErrorCode.UNKNOWN_BASE_MODEL,
)
# every route reads Redis (the API key, the job record): an outage answers 503 with Retry-After
_ROUTE_ERRORS = (ErrorCode.INVALID_PARAMETER, ErrorCode.UNAUTHORIZED, ErrorCode.RATE_LIMITED,
                 ErrorCode.SERVICE_UNAVAILABLE)


@router.post(
    SUBMIT_PATH.removeprefix("/api/v1"),
    status_code=202,
    response_model=SubmitResponse,
    summary="Submit a face photo; generation runs asynchronously",
    description=(
        "Multipart form: the photo in `face_image` (or 1-5 photos of the same person: repeat the field) plus "
        "generation parameters (and, optionally, a photo of anyone in the wanted pose in `pose_image`). "
        "Answers 202 with the "
        "job's URLs. With `Prefer: wait=N` (N clamped to the server's max_wait_s) the request is held "
        "until the job ends or N seconds pass: 200 with the result JSON if it succeeded, 200 with the "
        "status JSON if it failed, else the 202 body (with `Location` and `Retry-After`). A bare "
        "`Prefer: wait` waits as long as the server allows. `Preference-Applied` says when the wait "
        "was honoured."
    ),
    responses={
        202: {"description": "Accepted: poll `Location` (the status_url).", "headers": _ACCEPTED_HEADERS},
        200: {"description": "Prefer: wait=N and the job ended within N seconds.",
              "content": {"application/json": {"examples": {
                  "succeeded": {"value": JobResultResponse.model_config["json_schema_extra"]["examples"][0]},
                  "failed": {"value": JobStatusResponse.model_config["json_schema_extra"]["examples"][3]},
              }}}},
        **_SUBMIT_ERRORS,
    },
    openapi_extra={"requestBody": submit_request_body()},
)
async def generate_identity_body(
    request: Request,
    settings: SettingsDep,
    store: StoreDep,
    storage: StorageDep,
    key: ApiKeyDep,
    submit_ctx: SubmitDep,
    base: BaseUrlDep,
    prefer: PreferHeader = None,
    idempotency_key: Annotated[str | None, Header(
        alias="Idempotency-Key",
        description="Same key + same body within 24 h returns the original job; a different body gets 422; "
                    "a twin request still being accepted gets 409 (retry after Retry-After).",
    )] = None,
) -> JSONResponse:
    form = await read_submit_form(request, settings.max_upload_bytes)
    submitted = await run_in_threadpool(submit_job, submit_ctx, form, key, idempotency_key)
    record, position = submitted.record, submitted.queue_position
    if submitted.replayed:
        return _accepted(record, position, base, {"Idempotent-Replayed": "true"})
    wait = wait_seconds(prefer, settings.max_wait_s)
    limiter: anyio.CapacityLimiter = request.app.state.wait_limiter
    if wait is None or limiter.available_tokens < 1:
        return _accepted(record, position, base)
    finished = await anyio.to_thread.run_sync(store.wait_finished, record.request_id, wait, limiter=limiter)
    headers = {"Preference-Applied": f"wait={wait}"}
    if finished is None:
        current = await run_in_threadpool(store.get, record.request_id) or record
        position = await run_in_threadpool(store.queue_position, record.request_id)
        return _accepted(current, position, base, headers)
    if finished.status is JobStatus.SUCCEEDED:
        return JSONResponse(result_view(finished, storage.result_url), headers=headers)
    return JSONResponse(status_view(finished, base), headers=headers)


@router.get(
    "/jobs",
    response_model=JobListResponse,
    summary="The caller's jobs, newest first",
    description=(
        "Jobs of the API key making the request (with auth off and no key: the jobs submitted without "
        "one), newest first, `limit` at a time. Pass `next_cursor` back as `cursor` for the next page."
    ),
    responses=error_responses(ErrorCode.INVALID_PARAMETER, ErrorCode.UNAUTHORIZED, ErrorCode.RATE_LIMITED),
)
def list_jobs(
    store: StoreDep, owner: OwnerDep, base: BaseUrlDep,
    limit: Annotated[int, Query(ge=1, le=listing.MAX_PAGE, description="Jobs per page.")] = 20,
    cursor: Annotated[str | None, Query(
        max_length=512, pattern=r"^[A-Za-z0-9_-]+$",
        description="`next_cursor` of the previous page, passed back unchanged: opaque URL-safe base64 (no "
                    "padding) whose content may change between versions; any other value is 422 invalid_parameter.",
        examples=["MTc2NTEyMzQ1Ni43ODk6NmY5YzJkMWUtYjRhMy00YzVlLThmMmEtOWQwYjFjM2U0ZjVh"])] = None,
) -> JSONResponse:
    page = listing.list_jobs(store, owner, limit=limit, cursor=cursor)
    jobs = [{k: v for k, v in status_view(r, base).items() if v is not None} for r in page.records]
    return JSONResponse({"jobs": jobs, "next_cursor": page.next_cursor})


@router.get(
    "/jobs/{request_id}",
    response_model=JobStatusResponse,
    response_model_exclude_none=True,
    summary="Status of a job",
    description=(
        "With `Prefer: wait=N` (or a bare `wait`) the request is held until the job ends or N seconds "
        "pass (long polling); `Preference-Applied` says when the wait was honoured. An unfinished job's "
        "answer carries `Retry-After`."
    ),
    responses=error_responses(ErrorCode.JOB_NOT_FOUND, *_ROUTE_ERRORS),
)
async def job_status(request_id: RequestId, request: Request, store: StoreDep, owner: OwnerDep,
                     base: BaseUrlDep, prefer: PreferHeader = None) -> JSONResponse:
    # record and queue rank in one pipelined round trip, one threadpool hop
    record, position = await run_in_threadpool(store.get_with_position, request_id)
    record = _check_visible(record, owner)
    headers: dict[str, str] = {}
    wait = wait_seconds(prefer, request.app.state.settings.max_wait_s) if prefer else None
    limiter: anyio.CapacityLimiter = request.app.state.wait_limiter
    if wait is not None and not record.status.finished and limiter.available_tokens >= 1:
        await anyio.to_thread.run_sync(store.wait_finished, request_id, wait, limiter=limiter)
        record, position = await run_in_threadpool(store.get_with_position, request_id)
        record = _check_visible(record, owner)
        headers["Preference-Applied"] = f"wait={wait}"
    if not record.status.finished:
        headers["Retry-After"] = str(POLL_AFTER_S)
    return JSONResponse(status_view(record, base, position), headers=headers or None)


@router.get(
    "/jobs/{request_id}/events",
    summary="Live status of a job as server-sent events",
    description=(
        "`text/event-stream`: an `event: status` whose data is the status JSON (as `GET /jobs/{id}`) each "
        "time it changes — queue position while queued; stage, step and `eta_s` while running — ending "
        "after the finished status. An `event: error` with `{error: {code, message}}` ends it when the job "
        "is deleted meanwhile. Comment lines keep a quiet stream open; a stream still open after 10 minutes "
        "ends, and the client opens it again. Browsers that cannot send the Authorization header with "
        "EventSource can read it with fetch(). Open streams are capped per API key (429 too_many_streams) and "
        "per server process (503 streams_full), both with Retry-After: poll `GET /jobs/{id}` instead."
    ),
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {"example": (
        'id: 1\nevent: status\ndata: {"request_id":"...","status":"queued","queue_position":1,...}\n\n'
        'id: 2\nevent: status\ndata: {"request_id":"...","status":"running","progress":{"step":3,'
        '"total":8,"stage":"denoising","eta_s":2.5},...}\n\n')}}},
               **error_responses(ErrorCode.JOB_NOT_FOUND, ErrorCode.INVALID_PARAMETER, ErrorCode.UNAUTHORIZED,
                                 ErrorCode.RATE_LIMITED, ErrorCode.TOO_MANY_STREAMS, ErrorCode.STREAMS_FULL)},
)
async def job_events(request_id: RequestId, request: Request, store: StoreDep, owner: OwnerDep,
                     base: BaseUrlDep) -> StreamingResponse:
    record, position = await run_in_threadpool(store.get_with_position, request_id)
    first = status_view(_check_visible(record, owner), base, position)
    watch = watcher_of(request.app).watch(request_id, owner)  # 429/503 past the stream caps
    stream = status_events(watch, base, first)
    return StreamingResponse(stream, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get(
    "/jobs/{request_id}/result",
    response_model=JobResultResponse,
    summary="Result of a finished job, in the seed's response shape",
    description=(
        "Succeeded: `success: true` and presigned image URLs. Failed or canceled: 200 with "
        "`success: false`, no images and `error {code, message}`. Queued or running: 409 job_not_finished."
    ),
    responses=error_responses(ErrorCode.JOB_NOT_FOUND, ErrorCode.JOB_NOT_FINISHED, *_ROUTE_ERRORS),
)
def job_result(request_id: RequestId, store: StoreDep, storage: StorageDep, owner: OwnerDep) -> JSONResponse:
    record = _load(store, request_id, owner)
    if not record.status.finished:
        raise IdentityBodyError(
            ErrorCode.JOB_NOT_FINISHED,
            f"The job is {record.status.value}; poll its status_url until it has finished.",
        )
    return JSONResponse(result_view(record, storage.result_url))


@router.post(
    "/jobs/{request_id}/cancel",
    response_model=JobStatusResponse,
    response_model_exclude_none=True,
    summary="Cancel a queued or running job",
    description=(
        "A queued job is revoked and never reaches a GPU; a running job stops at its next denoise step. "
        "Answers the job's status (canceled) and fires its webhook. A finished job answers 409 "
        "job_already_finished."
    ),
    responses=error_responses(ErrorCode.JOB_NOT_FOUND, ErrorCode.JOB_ALREADY_FINISHED, *_ROUTE_ERRORS),
)
def cancel_job(request_id: RequestId, store: StoreDep, celery: CeleryDep, job_end: JobEndDep, owner: OwnerDep,
               base: BaseUrlDep) -> JSONResponse:
    record = _load(store, request_id, owner)
    canceled = _cancel(store, celery, job_end, record)
    if canceled is None:
        current = store.get(request_id) or record
        raise IdentityBodyError(
            ErrorCode.JOB_ALREADY_FINISHED,
            f"The job already finished ({current.status.value}); there is nothing to cancel.",
        )
    return JSONResponse(status_view(canceled, base))


@router.delete(
    "/jobs/{request_id}",
    response_model=DeletedResponse,
    summary="Delete a job now: its face upload, result images and record",
    description="A job still queued or running is canceled first. Afterwards the job answers 404.",
    responses=error_responses(ErrorCode.JOB_NOT_FOUND, *_ROUTE_ERRORS),
)
def delete_job(request_id: RequestId, store: StoreDep, celery: CeleryDep, job_end: JobEndDep,
               owner: OwnerDep) -> JSONResponse:
    record = _load(store, request_id, owner)
    if not record.status.finished:
        record = _cancel(store, celery, job_end, record) or store.get(request_id) or record
    job_end.retention.purge(record)
    return JSONResponse({"request_id": request_id, "deleted": True})


CANCELED_MESSAGE = "The job was canceled by its owner."


def _cancel(store: JobStore, celery: Any, job_end: Any, record: JobRecord) -> JobRecord | None:
    """queued|running -> canceled, then the end-of-job steps; None when it had already finished."""
    if record.status.finished:
        return None
    if record.status is JobStatus.QUEUED:
        # the GPU task checks the record before running, so a revoke lost on the way is harmless
        _revoke(celery, record.request_id)
    canceled = store.transition(record.request_id, JobStatus.CANCELED,
                                error=JobError(code=ErrorCode.JOB_CANCELED.value, message=CANCELED_MESSAGE))
    if canceled is not None:
        job_end.after_finish(canceled)
    return canceled


def _revoke(celery: Any, task_id: str) -> None:
    try:
        celery.control.revoke(task_id)
    except Exception as exc:  # broker hiccup: the record check in the task still stops the job
        log.warning("revoking task %s failed: %s", task_id, type(exc).__name__)


def _load(store: JobStore, request_id: str, owner: str | None) -> JobRecord:
    """The job, or 404 for unknown ids and for other owners' jobs alike (no hint that it exists)."""
    return _check_visible(store.get(request_id), owner)


def _check_visible(record: JobRecord | None, owner: str | None) -> JobRecord:
    # a caller without a key (auth disabled) sees only jobs submitted without one, as a keyed
    # caller sees only its own
    if record is None or record.owner != owner:
        raise IdentityBodyError(
            ErrorCode.JOB_NOT_FOUND, "No job with this request_id; it may have expired.", field="request_id"
        )
    return record


def _accepted(record: JobRecord, position: int | None, base: str,
              headers: dict[str, str] | None = None) -> JSONResponse:
    """202 with the job's URLs, ``Location`` (its status URL) and ``Retry-After``."""
    body = _accepted_body(record, position, base)
    location = {"Location": body["status_url"], "Retry-After": str(POLL_AFTER_S)}
    return JSONResponse(body, status_code=202, headers={**location, **(headers or {})})


def _accepted_body(record: JobRecord, position: int | None, base: str) -> dict[str, Any]:
    return {
        "request_id": record.request_id,
        "status": record.status.value,
        **job_urls(base, record.request_id),
        "queue_position": position,
    }
