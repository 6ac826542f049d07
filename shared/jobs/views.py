"""What clients see of a job: the status JSON (also the webhook body) and the seed's result JSON.
Pure functions of a JobRecord, so the gateway and the io worker render the same thing.

Example::

    status_view(record, base_url="https://api.example", queue_position=3)
    result_view(record, url_for=storage.result_url)
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from shared.jobs.record import JobRecord, JobStatus, ResultImage

API_PREFIX = "/api/v1"


def job_urls(base_url: str, request_id: str) -> dict[str, str]:
    """Absolute status, result and cancel URLs of a job.

    Example::

        job_urls("http://127.0.0.1:8000", "r1")["status_url"]  # http://127.0.0.1:8000/api/v1/jobs/r1
    """
    base = base_url.rstrip("/") + f"{API_PREFIX}/jobs/{request_id}"
    return {"status_url": base, "result_url": f"{base}/result", "cancel_url": f"{base}/cancel"}


def iso8601(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def status_view(record: JobRecord, base_url: str, queue_position: int | None = None) -> dict[str, Any]:
    """The status JSON: position while queued, progress while running, error when failed or
    canceled, result_url once succeeded."""
    view: dict[str, Any] = {
        "request_id": record.request_id,
        "status": record.status.value,
        "created_at": iso8601(record.created_at),
        "started_at": iso8601(record.started_at),
        "finished_at": iso8601(record.finished_at),
    }
    if record.status is JobStatus.QUEUED:
        view["queue_position"] = queue_position
    if record.status is JobStatus.RUNNING:
        view["progress"] = record.progress.model_dump()
    if record.error is not None and record.status in (JobStatus.FAILED, JobStatus.CANCELED):
        view["error"] = {"code": record.error.code, "message": record.error.message}
    if record.status is JobStatus.SUCCEEDED:
        view["result_url"] = job_urls(base_url, record.request_id)["result_url"]
        view["input_face"] = input_face(record)
    if record.note and not record.status.finished:
        view["note"] = record.note
    if record.webhook_url:
        view["webhook_attempts"] = [a.model_dump() for a in record.webhook_attempts]
    return view


def result_view(record: JobRecord, url_for: Callable[[str], str]) -> dict[str, Any]:
    """The seed's response: ``success, request_id, count, images[{id, url}], analysis, method, note``.

    A failed or canceled job answers ``success: false`` with no images and its ``error``; the
    caller must not pass a job that is still queued or running.
    """
    if not record.status.finished:
        raise ValueError(f"job {record.request_id} is {record.status.value}, not finished")
    result = record.result
    succeeded = record.status is JobStatus.SUCCEEDED
    images = [image_entry(im, url_for) for im in result.images] if (succeeded and result) else []
    view: dict[str, Any] = {
        "success": succeeded,
        "request_id": record.request_id,
        "count": len(images),
        "images": images,
        "analysis": dict(result.analysis) if result else {},
        "method": result.method if result else "instantid",
        "profile": result.profile if result else None,
        "note": result.note if result else None,
        "parts": list(result.parts) if result else [],
        "identity_judge": result.identity_judge if result else None,
        "identity_judge_independent": result.identity_judge_independent if result else None,
        "safety_check": result.safety_check if result else None,
        "face_image_count": result.face_image_count if result else None,
        "keypoints_face_image": result.keypoints_face_image if result else None,
        "base_model": result.base_model if result else None,
        "pose_source": result.pose_source if result else None,
        "input_face": input_face(record),
    }
    if not succeeded:
        error = record.error
        view["error"] = (
            {"code": error.code, "message": error.message}
            if error
            else {"code": "job_canceled", "message": "The job was canceled."}
        )
    return view


def image_entry(image: ResultImage, url_for: Callable[[str], str]) -> dict[str, Any]:
    """One image of the result: its URL, type and file name, and its likeness (``identity_score``
    None with ``face_found: false`` when no face was found in it)."""
    return {"id": image.id, "url": url_for(image.key), "content_type": image.content_type,
            "file_name": image.key.rsplit("/", 1)[-1], "identity_score": image.identity_score,
            "face_found": image.face_found, "below_threshold": image.below_threshold, "seed": image.seed,
            "face_detail": image.face_detail, "face_detail_reason": image.face_detail_reason, "nsfw": image.nsfw}


def input_face(record: JobRecord) -> dict[str, Any] | None:
    """The uploaded face as the worker found it: detection score and box size (w, h) in pixels."""
    face = (record.result.analysis.get("face") if record.result else None) or {}
    if "det_score" not in face:
        return None
    bbox = face.get("bbox") or [0, 0, 0, 0]
    size = face.get("box_size") or [round(bbox[2] - bbox[0], 1), round(bbox[3] - bbox[1], 1)]
    return {"det_score": face["det_score"], "box_size": size}
