"""Response models of the HTTP API, with the examples OpenAPI shows. The multipart request body is
described from ``shared.params.GenerationParams`` so its ranges are written once.

Example::

    SubmitResponse.model_validate(body)
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.errors import HTTP_STATUS, ErrorCode
from shared.face_images import MAX_FACE_IMAGES
from shared.jobs.record import JobStatus
from shared.params import GenerationParams

_RID = "0b7f6f0e-3c4e-4d0a-9a51-6f3f2b8e9c11"
_BASE = f"https://api.example.com/api/v1/jobs/{_RID}"


class SubmitResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "request_id": _RID, "status": "queued", "status_url": _BASE, "result_url": f"{_BASE}/result",
        "cancel_url": f"{_BASE}/cancel", "queue_position": 1,
    }]})

    request_id: str
    status: JobStatus = Field(description="queued, running, succeeded, failed or canceled.")
    status_url: str
    result_url: str
    cancel_url: str
    queue_position: int | None = Field(None, description="1-based place in the queue while queued.")


class ProgressOut(BaseModel):
    step: int = Field(description="Denoise steps done.")
    total: int = Field(description="Denoise steps in all.")
    stage: str | None = Field(None, description="analyzing_face, denoising, face_detail or uploading.")
    eta_s: float | None = Field(None, description="Seconds left of the denoise loop, from the step times measured on this job.")


class JobErrorOut(BaseModel):
    code: ErrorCode = Field(description="Stable machine code (shared.errors.ErrorCode).")
    message: str


class WebhookAttemptOut(BaseModel):
    attempt: int = Field(description="1, 2, ... in order.")
    at: float = Field(description="When the attempt started, Unix seconds.")
    status_code: int | None = Field(None, description="The receiver's HTTP status; none on network errors.")
    error: str | None = Field(None, description="Why the attempt failed without an answer, or was refused.")


class JobStatusResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"request_id": _RID, "status": "queued", "queue_position": 2, "created_at": "2026-03-01T12:00:00Z",
         "started_at": None, "finished_at": None},
        {"request_id": _RID, "status": "running",
         "progress": {"step": 3, "total": 8, "stage": "denoising", "eta_s": 2.5},
         "created_at": "2026-03-01T12:00:00Z", "started_at": "2026-03-01T12:00:01Z", "finished_at": None},
        {"request_id": _RID, "status": "succeeded", "result_url": f"{_BASE}/result",
         "input_face": {"det_score": 0.87, "box_size": [212.0, 268.5]},
         "created_at": "2026-03-01T12:00:00Z", "started_at": "2026-03-01T12:00:01Z",
         "finished_at": "2026-03-01T12:00:09Z"},
        {"request_id": _RID, "status": "failed",
         "error": {"code": "no_face_detected", "message": "No face was found in the photo."},
         "created_at": "2026-03-01T12:00:00Z", "started_at": "2026-03-01T12:00:01Z",
         "finished_at": "2026-03-01T12:00:02Z"},
        {"request_id": _RID, "status": "failed",
         "error": {"code": "faces_differ", "message": "Photo 3 of 3 does not show the same person as the others "
                   "(face distance 0.160; at most 0.085 counts as one person). Leave it out or send photos of "
                   "one person only."},
         "created_at": "2026-03-01T12:00:00Z", "started_at": "2026-03-01T12:00:01Z",
         "finished_at": "2026-03-01T12:00:02Z"},
        {"request_id": _RID, "status": "failed",
         "error": {"code": "no_person_in_pose_image", "message": "No person was found in the pose photo. Upload a "
                   "photo where one person's body is in view (head and shoulders at least), or leave pose_image out "
                   "and pick a pose."},
         "created_at": "2026-03-01T12:00:00Z", "started_at": "2026-03-01T12:00:01Z",
         "finished_at": "2026-03-01T12:00:02Z"},
    ]})

    request_id: str
    status: JobStatus
    queue_position: int | None = Field(None, description="Only while queued.")
    progress: ProgressOut | None = Field(None, description="Only while running: stage, denoise step of total, seconds left.")
    error: JobErrorOut | None = Field(None, description="Only when failed or canceled.")
    note: str | None = Field(None, description=(
        "Only while queued or running, when something delayed the job: 'retrying: ...' while a "
        "dependency is unreachable, 'requeued: ...' after its worker died."))
    result_url: str | None = Field(None, description="Only when succeeded.")
    input_face: InputFaceOut | None = Field(None, description="Only when succeeded: the uploaded face as found.")
    created_at: str = Field(description="ISO-8601, UTC.")
    started_at: str | None = None
    finished_at: str | None = None
    webhook_attempts: list[WebhookAttemptOut] | None = Field(
        None, description="Only for jobs with a webhook_url: every delivery attempt so far.")


class JobListResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "jobs": [{"request_id": _RID, "status": "succeeded", "result_url": f"{_BASE}/result",
                  "created_at": "2026-03-01T12:00:00Z", "started_at": "2026-03-01T12:00:01Z",
                  "finished_at": "2026-03-01T12:00:09Z"}],
        "next_cursor": "MTc3MjM2NjQwMC4wOjBiN2Y2ZjBl",
    }]})

    jobs: list[JobStatusResponse] = Field(description="The caller's jobs, newest first.")
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page; none on the last page.")


class DeletedResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"request_id": _RID, "deleted": True}]})

    request_id: str
    deleted: bool = Field(description="Always true: upload, images and record are gone.")


class ResultImageOut(BaseModel):
    id: str = Field(description="identity_body_0, identity_body_1, ...")
    url: str = Field(description="Presigned GET (or CDN) URL of the image.")
    content_type: str = Field("image/png", description="image/png, image/jpeg or image/webp: the job's output_format; "
                              "the URL serves it with this Content-Type.")
    file_name: str = Field(description="identity_body_<i>.png, .jpg or .webp: the stored object's name.")
    identity_score: float | None = Field(None, description=(
        "Cosine similarity between the uploaded face's and this image's largest face's embeddings, both by the "
        "identity judge (see identity_judge: dlib's recognizer, not the antelopev2 one that steered the "
        "generation); 1 is the same face, strangers score about 0.8-0.9 on dlib's scale. Null when no face was found."))
    face_found: bool | None = Field(None, description="Whether a face was found in this image.")
    below_threshold: bool = Field(False, description=(
        "True when min_identity_score was given and this image scores below it (or shows no face)."))
    seed: int | None = Field(None, description="The seed that reproduces this image (seed + its place in the batch).")
    face_detail: Literal["applied", "skipped"] | None = Field(None, description="What the face-detail pass did "
                                                                   "to this image (null when it did not run).")
    face_detail_reason: str | None = Field(None, description="Why it was skipped: no_face, no_steps, off, "
                                           "or unavailable with sdxl_fallback.")
    nsfw: bool | None = Field(None, description="The safety check's verdict. true: the detector flagged this image "
                              "and the URL serves a heavily blurred copy in its place (the original is not kept); "
                              "null: the operator turned the check off (safety_check: off).")


class InputFaceOut(BaseModel):
    det_score: float = Field(description="The detector's confidence for the uploaded face, 0-1.")
    box_size: list[float] = Field(description="Width and height of the face's box in the upload, pixels.")


class JobResultResponse(BaseModel):
    """The seed's response shape. A failed or canceled job answers 200 with success=false,
    no images and its ``error``."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"success": True, "request_id": _RID, "count": 2,
         "images": [{"id": "identity_body_0", "url": "https://s3.example.com/idbody-results/...0.png?X-Amz-Signature=...",
                     "content_type": "image/png", "file_name": "identity_body_0.png",
                     "identity_score": 0.71, "face_found": True, "below_threshold": False, "seed": 1236,
                     "face_detail": "applied", "face_detail_reason": None, "nsfw": False},
                    {"id": "identity_body_1", "url": "https://s3.example.com/idbody-results/...1.png?X-Amz-Signature=...",
                     "content_type": "image/png", "file_name": "identity_body_1.png",
                     "identity_score": None, "face_found": False, "below_threshold": True, "seed": 1234,
                     "face_detail": "skipped", "face_detail_reason": "no_face", "nsfw": True}],
         "analysis": {"skin_tone": "warm ivory", "ethnicity": "East Asian"}, "method": "instantid",
         "profile": "instantid", "note": None,
         "parts": ["sdxl", "vae-fp16-fix", "identitynet", "ip-adapter", "lcm-lora", "pose-prompt-only"],
         "identity_judge": "dlib-resnet", "identity_judge_independent": True, "safety_check": "nudenet-320n",
         "base_model": "sdxl-base-1.0", "pose_source": "standing",
         "input_face": {"det_score": 0.87, "box_size": [212.0, 268.5]},
         "face_image_count": 2, "keypoints_face_image": 1},
        {"success": False, "request_id": _RID, "count": 0, "images": [], "analysis": {}, "method": "instantid",
         "profile": None, "note": None, "parts": [], "input_face": None,
         "error": {"code": "no_face_detected", "message": "No face was found in the photo."}},
    ]})

    success: bool
    request_id: str
    count: int
    images: list[ResultImageOut]
    analysis: dict[str, Any]
    method: str = Field(description="instantid, or sdxl_fallback when the InstantID parts could not load.")
    profile: str | None = Field(None, description=(
        "Which weights made the images: instantid (the released ones) or tiny (random weights: noise)."))
    note: str | None
    parts: list[str] = Field(default_factory=list, description=(
        "What made the images: the model parts the worker loaded (sdxl, vae-fp16-fix, identitynet, "
        "ip-adapter, lcm-lora, pose-controlnet) and, without a pose ControlNet, pose-prompt-only: the "
        "pose was asked for in the prompt alone (pose-photo-head-only with a pose_image: the photo placed "
        "the head only). Empty for a job that did not succeed."))
    identity_judge: str | None = Field(None, description=(
        "The recognizer that computed identity_score: dlib-resnet (dlib's ResNet face recognizer). Null for a job "
        "that did not succeed."))
    identity_judge_independent: bool | None = Field(None, description=(
        "true: the judge is not the recognizer whose embedding conditioned the generation (instantid profile: "
        "antelopev2 conditions, dlib judges); false: the same one (tiny profile: dlib does both)."))
    safety_check: str | None = Field(None, description=(
        "The detector that screened every image (nudenet-320n), or off when the operator turned the check off."))
    base_model: str | None = Field(None, description=(
        "The SDXL base checkpoint that made the images (the job's base_model, or the default one's name). Null "
        "for a job that did not succeed."))
    pose_source: str | None = Field(None, description=(
        "What set the pose: photo (the job's pose_image) or the pose template's name (standing, walking, "
        "sitting). Null for a job that did not succeed."))
    input_face: InputFaceOut | None = Field(None, description="The uploaded face as found: detection score and box size "
                                            "(of the photo the keypoints came from, when several were sent).")
    face_image_count: int | None = Field(None, description=(
        "How many face photos the identity was combined from (1-5: the normalised mean of their embeddings). "
        "Null for a job that did not succeed."))
    keypoints_face_image: int | None = Field(None, description=(
        "Which photo (1-based, in the order sent) gave the face's keypoints: the largest, most frontal face. "
        "analysis.face_images lists every photo's face (det_score, box_size, frontality)."))
    error: JobErrorOut | None = Field(None, description="Only when the job failed or was canceled.")


class HealthResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})
    status: str


class ReadyResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"status": "ready", "checks": {"redis": True, "s3": True, "workers": True}, "workers": 1, "failed": []},
        {"status": "not_ready", "checks": {"redis": True, "s3": True, "workers": False}, "workers": 0,
         "failed": ["workers"]},
    ]})
    status: str = Field(description="ready or not_ready.")
    checks: dict[str, bool]
    workers: int = Field(description="Live workers with a loaded pipeline.")
    failed: list[str] = Field(description="Names of the checks that failed.")


class ErrorBody(BaseModel):
    code: ErrorCode = Field(description="Stable machine code (shared.errors.ErrorCode).")
    message: str = Field(description="A sentence a person can act on.")
    field: str | None = Field(None, description="The request field at fault, if any.")


class ErrorResponse(BaseModel):
    error: ErrorBody


# one example per error code a route can answer, shown in OpenAPI
_ERROR_EXAMPLES: dict[ErrorCode, tuple[str, str | None]] = {
    ErrorCode.INVALID_PARAMETER: ("height_cm: Input should be less than or equal to 300. Height in centimetres, 50-300. (got '400')", "height_cm"),
    ErrorCode.MISSING_FIELD: ("Send the face photo as the multipart file field 'face_image'.", "face_image"),
    ErrorCode.FILE_TOO_LARGE: ("The photo is larger than 10 MiB. Upload a smaller JPEG, PNG, WebP, HEIC or AVIF photo.", "face_image"),
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: ("The photo must be a JPEG, PNG, WebP, HEIC or AVIF image (checked from its content, not its name).", "face_image"),
    ErrorCode.IMAGE_DECODE_FAILED: ("The photo could not be decoded; it may be truncated or corrupt. Upload it again.", "face_image"),
    ErrorCode.IMAGE_TOO_LARGE: ("The photo has more than 40,000,000 pixels (a JPEG may have up to 200,000,000). Upload a smaller image or a JPEG.", "face_image"),
    ErrorCode.IMAGE_TOO_SMALL: ("The photo is 40x40 pixels; both sides must be at least 64.", "face_image"),
    ErrorCode.ANIMATED_IMAGE: ("Photo 2 of 3: Animated images are not accepted. Upload a single still photo.", "face_image[2]"),
    ErrorCode.TOO_MANY_FACE_IMAGES: ("6 face photos were sent; send 1 to 5 photos of the same person (repeat the field "
                                     "'face_image'), keeping the clearest, most frontal ones.", "face_image"),
    ErrorCode.WEBHOOK_URL_REFUSED: ("webhook_url must be an http or https URL.", "webhook_url"),
    ErrorCode.JOB_NOT_FOUND: ("No job with this request_id; it may have expired.", "request_id"),
    ErrorCode.JOB_NOT_FINISHED: ("The job is still running; poll status_url until it has finished.", None),
    ErrorCode.SERVICE_UNAVAILABLE: ("The job queue is unreachable; try again in a moment.", None),
    ErrorCode.NOT_FOUND: ("No route at /api/v1/nope.", None),
    ErrorCode.METHOD_NOT_ALLOWED: ("DELETE is not allowed here; allowed: GET.", None),
    ErrorCode.REQUEST_TIMEOUT: ("The request body did not arrive within 60 s; send it again on a faster connection.", None),
    ErrorCode.UNAUTHORIZED: ("Send a valid API key as 'Authorization: Bearer <key>' (create one with 'idbody keys create').", None),
    ErrorCode.RATE_LIMITED: ("This API key allows 60 requests per minute; try again in 12 s.", None),
    ErrorCode.TOO_MANY_STREAMS: ("This API key has 50 event streams open; close one or poll the job's status_url "
                                 "instead.", None),
    ErrorCode.STREAMS_FULL: ("This server holds its most event streams (2000); poll the job's status_url "
                             "instead, or open the stream again later.", None),
    ErrorCode.TOO_MANY_QUEUED: ("This API key already has 10 unfinished jobs; wait for one to finish or cancel one.", None),
    ErrorCode.IDEMPOTENCY_MISMATCH: ("This Idempotency-Key was already used with a different request body; use a new key for a new request.", "Idempotency-Key"),
    ErrorCode.IDEMPOTENCY_IN_PROGRESS: ("A request with this Idempotency-Key is still being accepted; retry in a moment.", "Idempotency-Key"),
    ErrorCode.JOB_ALREADY_FINISHED: ("The job already finished (succeeded); there is nothing to cancel.", None),
    ErrorCode.UNKNOWN_BASE_MODEL: ("base_model: no base checkpoint named 'juggernaut' on this server; choose from "
                                   "sdxl-base-1.0, realvis (GET /api/v1/info lists them under base_models).",
                                   "base_model"),
}


def error_responses(*codes: ErrorCode) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the given error codes, grouped by HTTP status, one example each.

    Example::

        @router.get("/x", responses=error_responses(ErrorCode.JOB_NOT_FOUND))
    """
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        status = HTTP_STATUS[code]
        message, field = _ERROR_EXAMPLES[code]
        entry = out.setdefault(status, {"model": ErrorResponse, "description": "Error", "content": {"application/json": {"examples": {}}}})
        entry["content"]["application/json"]["examples"][code.value] = {
            "summary": code.value,
            "value": {"error": {"code": code.value, "message": message, "field": field}},
        }
    return out


SUBMIT_FIELDS_EXTRA = {
    "face_image": {"type": "array", "items": {"type": "string", "format": "binary"}, "minItems": 1,
                   "maxItems": MAX_FACE_IMAGES,
                   "description": f"The face photo, or 1-{MAX_FACE_IMAGES} photos of the same person: repeat the field "
                                  "(curl: -F face_image=@front.jpg -F face_image=@side.jpg). Each is JPEG, PNG, WebP, HEIC or AVIF; by default at most 10 MiB (IDBODY_MAX_UPLOAD_BYTES), a JPEG up to 200 megapixels (IDBODY_MAX_JPEG_PIXELS), other formats up to 40 (IDBODY_MAX_IMAGE_PIXELS). "
                                  "Several photos are averaged into one identity and the largest, most frontal face lays out the face; "
                                  "photos of different people fail the job with faces_differ. An error about one photo names it: field face_image[2], \"Photo 2 of 3: ...\"."},
    "pose_image": {"type": "string", "format": "binary", "description": "Optional: a photo of anyone in the wanted pose, checked like face_image. Its body, read by a pose detector, sets the pose in place of `pose` (the result's pose_source says photo): the skeleton the pose ControlNet follows, with this person's head where the photo's head is. A photo with nobody in it fails the job with no_person_in_pose_image; without a pose ControlNet only the head is placed (parts: pose-photo-head-only). GET /api/v1/info says under pose_photos whether the workers read pose photos and have a pose ControlNet."},
    "webhook_url": {"type": "string", "format": "uri", "description": "Called when the job ends (delivery: see the webhooks docs)."},
}


def candidates_rules() -> list[dict[str, Any]]:
    """``candidates >= num_images`` in JSON Schema, which cannot compare two fields: one rule per
    possible num_images (an absent one means its default), so a client generated from the OpenAPI
    knows the rule ``GenerationParams`` enforces."""
    images = GenerationParams.model_fields["num_images"]
    bounds = {type(m).__name__: m for m in images.metadata}
    low, high = int(bounds["Ge"].ge), int(bounds["Le"].le)
    rules: list[dict[str, Any]] = [{"if": {"properties": {"num_images": {"const": n}}, "required": ["num_images"]},
                                    "then": {"properties": {"candidates": {"minimum": n}}}}
                                   for n in range(low + 1, high + 1)]
    if int(images.default) > low:
        rules.append({"if": {"not": {"required": ["num_images"]}},
                      "then": {"properties": {"candidates": {"minimum": int(images.default)}}}})
    return rules


def submit_request_body() -> dict[str, Any]:
    """The multipart request body of the submit route, derived from GenerationParams."""
    params = GenerationParams.model_json_schema()
    schema = {
        "type": "object",
        "required": ["face_image"],
        "properties": {**SUBMIT_FIELDS_EXTRA, **params["properties"]},
        "additionalProperties": False,
        "allOf": candidates_rules(),
    }
    example = {"body_type": "athletic", "height_cm": 170, "weight_kg": 65, "gender": "female",
               "num_images": 4, "use_gemini_analysis": True, "style": "cinematic", "scene": "on a city rooftop at dusk",
               "output_format": "webp", "output_quality": 85}
    pose_photo = {"gender": "male", "num_images": 2, "clothing": "linen suit", "pose_image": "(binary: dancer.jpg)"}
    return {
        "required": True,
        "content": {"multipart/form-data": {"schema": schema, "examples": {
            "parameters": {"summary": "Body parameters, style and output format", "value": example},
            "pose_photo": {"summary": "The pose from a photo of anyone (the file field pose_image)", "value": pose_photo},
        }}},
    }
