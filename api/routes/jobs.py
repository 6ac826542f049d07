"""Submit a job, read its status, read its result."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, Path, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.deps import BaseUrlDep, CeleryDep, OwnerDep, SettingsDep, StorageDep, StoreDep
from api.prefer import wait_seconds
from api.schemas import (
    JobResultResponse,
    JobStatusResponse,
    SubmitResponse,
    error_responses,
    submit_request_body,
)
from api.submit import accept_job, parse_submit_fields, read_submit_form
from api.upload import normalize_upload
from shared.errors import ErrorCode, IdentityBodyError
from shared.job_record import JobRecord, JobStatus
from shared.job_store import JobStore
from shared.job_views import job_urls, result_view, status_view

router = APIRouter(prefix="/api/v1", tags=["jobs"])

RequestId = Annotated[str, Path(description="The request_id returned on submit.", max_length=128)]

_SUBMIT_ERRORS = error_responses(
    ErrorCode.INVALID_PARAMETER, ErrorCode.MISSING_FIELD, ErrorCode.FILE_TOO_LARGE,
    ErrorCode.IMAGE_TOO_LARGE, ErrorCode.UNSUPPORTED_MEDIA_TYPE, ErrorCode.IMAGE_DECODE_FAILED,
    ErrorCode.IMAGE_TOO_SMALL, ErrorCode.ANIMATED_IMAGE, ErrorCode.WEBHOOK_URL_REFUSED,
    ErrorCode.SERVICE_UNAVAILABLE,
)


@router.post(
    "/generate-identity-body",
    status_code=202,
    response_model=SubmitResponse,
    summary="Submit a face photo; generation runs asynchronously",
    description=(
        "Multipart form: the photo in `face_image` plus generation parameters. Answers 202 with the "
        "job's URLs. With `Prefer: wait=N` (N clamped to the server's max_wait_s) the request is held "
        "until the job ends or N seconds pass: 200 with the result JSON if it succeeded, 200 with the "
        "status JSON if it failed, else the 202 body. `Preference-Applied` says when the wait was honoured."
    ),
    responses={
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
    celery: CeleryDep,
    owner: OwnerDep,
    base: BaseUrlDep,
    prefer: Annotated[str | None, Header(description="`wait=N`: hold the request up to N seconds.")] = None,
) -> JSONResponse:
    form = await read_submit_form(request, settings.max_upload_bytes)
    params, webhook_url = parse_submit_fields(form.fields)

    def accept() -> tuple[JobRecord, int | None]:
        image = normalize_upload(form.image, settings.max_upload_bytes, settings.max_image_pixels,
                                 settings.min_image_side)
        record = accept_job(store, storage, celery, params, image, webhook_url=webhook_url, owner=owner)
        return record, store.queue_position(record.request_id)

    record, position = await run_in_threadpool(accept)
    wait = wait_seconds(prefer, settings.max_wait_s)
    limiter: anyio.CapacityLimiter = request.app.state.wait_limiter
    if wait is None or limiter.available_tokens < 1:
        return JSONResponse(_accepted_body(record, position, base), status_code=202)
    finished = await anyio.to_thread.run_sync(store.wait_finished, record.request_id, wait, limiter=limiter)
    headers = {"Preference-Applied": f"wait={wait}"}
    if finished is None:
        current = await run_in_threadpool(store.get, record.request_id) or record
        position = await run_in_threadpool(store.queue_position, record.request_id)
        return JSONResponse(_accepted_body(current, position, base), status_code=202, headers=headers)
    if finished.status is JobStatus.SUCCEEDED:
        return JSONResponse(result_view(finished, storage.result_url), headers=headers)
    return JSONResponse(status_view(finished, base), headers=headers)


@router.get(
    "/jobs/{request_id}",
    response_model=JobStatusResponse,
    response_model_exclude_none=True,
    summary="Status of a job",
    responses=error_responses(ErrorCode.JOB_NOT_FOUND, ErrorCode.INVALID_PARAMETER),
)
def job_status(request_id: RequestId, store: StoreDep, owner: OwnerDep, base: BaseUrlDep) -> JSONResponse:
    record = _load(store, request_id, owner)
    position = store.queue_position(request_id) if record.status is JobStatus.QUEUED else None
    return JSONResponse(status_view(record, base, position))


@router.get(
    "/jobs/{request_id}/result",
    response_model=JobResultResponse,
    summary="Result of a finished job, in the seed's response shape",
    description=(
        "Succeeded: `success: true` and presigned image URLs. Failed or canceled: 200 with "
        "`success: false`, no images and `error {code, message}`. Queued or running: 409 job_not_finished."
    ),
    responses=error_responses(ErrorCode.JOB_NOT_FOUND, ErrorCode.JOB_NOT_FINISHED, ErrorCode.INVALID_PARAMETER),
)
def job_result(request_id: RequestId, store: StoreDep, storage: StorageDep, owner: OwnerDep) -> JSONResponse:
    record = _load(store, request_id, owner)
    if not record.status.finished:
        raise IdentityBodyError(
            ErrorCode.JOB_NOT_FINISHED,
            f"The job is {record.status.value}; poll its status_url until it has finished.",
        )
    return JSONResponse(result_view(record, storage.result_url))


def _load(store: JobStore, request_id: str, owner: str | None) -> JobRecord:
    """The job, or 404 for unknown ids and for other owners' jobs alike (no hint that it exists)."""
    record = store.get(request_id)
    if record is None or (owner is not None and record.owner != owner):
        raise IdentityBodyError(
            ErrorCode.JOB_NOT_FOUND, "No job with this request_id; it may have expired.", field="request_id"
        )
    return record


def _accepted_body(record: JobRecord, position: int | None, base: str) -> dict[str, Any]:
    return {
        "request_id": record.request_id,
        "status": record.status.value,
        **job_urls(base, record.request_id),
        "queue_position": position,
    }
