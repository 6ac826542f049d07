"""The gateway over real HTTP (uvicorn on a loopback port) with real Valkey and SeaweedFS."""

from __future__ import annotations

import dataclasses
import base64
import io
import json
import subprocess
import sys
import threading
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from PIL import Image

from api.main import create_app
from shared.celery_app import make_celery
from shared.jobs.record import JobStatus
from idbody.stack.servers import free_port
from shared.queues import GENERATE_TASK, GPU_QUEUE
from tests import image_samples as samples
from idbody.stack.polling import until

pytestmark = pytest.mark.integration

SEED_FIELDS = {
    "body_type": "athletic", "height_cm": "170", "weight_kg": "65", "gender": "female",
    "num_images": "4", "use_gemini_analysis": "true",
}
SUBMIT = "/api/v1/generate-identity-body"


@dataclass
class Gateway:
    app: object
    client: httpx.Client
    base_url: str

    @property
    def store(self):
        return self.app.state.store

    @property
    def storage(self):
        return self.app.state.storage


def _serve(settings):
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    def started() -> bool:
        assert thread.is_alive(), "gateway thread died"
        return server.started

    until(started, 20, "the gateway to start", interval_s=0.01)
    return app, server, thread


@pytest.fixture
def gateway_settings(settings):
    return settings.model_copy(update={"max_upload_bytes": 512 * 1024, "max_image_pixels": 4_000_000,
                                       "max_wait_s": 30})


@pytest.fixture
def gateway(gateway_settings, redis_client):
    app, server, thread = _serve(gateway_settings)
    base = f"http://127.0.0.1:{server.config.port}"
    with httpx.Client(base_url=base, timeout=60) as client:
        yield Gateway(app, client, base)
    server.should_exit = True
    thread.join(10)


def _submit(gw: Gateway, image: bytes | None = None, name: str = "user_photo.jpg", fields=None, headers=None):
    files = {"face_image": (name, samples.photo() if image is None else image, "image/jpeg")}
    return gw.client.post(SUBMIT, data=SEED_FIELDS if fields is None else fields, files=files, headers=headers)


def _queued_messages(redis_client) -> list[dict]:
    return [json.loads(m) for m in redis_client.lrange(GPU_QUEUE, 0, -1)]


def _nothing_stored(gw: Gateway, redis_client) -> None:
    assert list(redis_client.scan_iter("job:*")) == []
    assert redis_client.llen(GPU_QUEUE) == 0
    listed = gw.storage.client.list_objects_v2(Bucket=gw.storage.uploads_bucket)
    assert listed.get("KeyCount", 0) == 0


# --- submit ---------------------------------------------------------------------------------------


def test_seed_curl_fields_accepted(gateway, redis_client):
    resp = _submit(gateway)
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert set(body) == {"request_id", "status", "status_url", "result_url", "cancel_url", "queue_position"}
    rid = body["request_id"]
    assert body["status"] == "queued" and body["queue_position"] == 1
    assert body["status_url"] == f"{gateway.base_url}/api/v1/jobs/{rid}"
    assert body["result_url"] == f"{body['status_url']}/result"
    assert body["cancel_url"] == f"{body['status_url']}/cancel"

    record = gateway.store.get(rid)
    assert record.status is JobStatus.QUEUED
    assert record.params["body_type"] == "athletic" and record.params["height_cm"] == 170
    assert record.params["use_gemini_analysis"] is True and record.params["num_images"] == 4
    stored = Image.open(io.BytesIO(gateway.storage.get_upload(record.upload_key)))
    assert stored.format == "JPEG" and stored.mode == "RGB" and stored.size == (160, 120)
    assert record.upload_key == f"{rid}/face.jpg"
    head = gateway.storage.client.head_object(Bucket=gateway.storage.uploads_bucket, Key=record.upload_key)
    assert head["ContentType"] == "image/jpeg"

    [message] = _queued_messages(redis_client)
    assert message["headers"]["task"] == GENERATE_TASK and message["headers"]["id"] == rid
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert args == [rid] and kwargs == {}


def test_second_job_queues_behind_first(gateway):
    first = _submit(gateway).json()
    second = _submit(gateway).json()
    assert (first["queue_position"], second["queue_position"]) == (1, 2)


def test_webhook_url_stored(gateway):
    rid = _submit(gateway, fields={**SEED_FIELDS, "webhook_url": "https://hooks.example.com/x"}).json()["request_id"]
    assert gateway.store.get(rid).webhook_url == "https://hooks.example.com/x"


def test_public_api_url_used_for_links(gateway_settings, redis_client):
    app, server, thread = _serve(gateway_settings.model_copy(update={"public_api_url": "https://api.example.com/"}))
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.config.port}", timeout=30) as client:
            gw = Gateway(app, client, "")
            body = _submit(gw).json()
        assert body["status_url"] == f"https://api.example.com/api/v1/jobs/{body['request_id']}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.mark.parametrize(
    "case,status,code",
    [
        ("too_big", 413, "file_too_large"),
        ("text_named_jpg", 415, "unsupported_media_type"),
        ("bomb", 413, "image_too_large"),
        ("animated_gif", 415, "unsupported_media_type"),
        ("animated_webp", 422, "animated_image"),
        ("too_small", 422, "image_too_small"),
        ("corrupt_jpeg", 422, "image_decode_failed"),
    ],
)
def test_upload_errors_store_nothing(gateway, redis_client, case, status, code):
    data = {
        "too_big": lambda: samples.photo(1200, 1200, fmt="PNG") + b"\0" * (600 * 1024),
        "text_named_jpg": lambda: b"this is not a photo\n" * 50,
        "bomb": lambda: samples.bomb_png(3000, 3000),
        "animated_gif": lambda: samples.animated("GIF"),
        "animated_webp": lambda: samples.animated("WEBP"),
        "too_small": lambda: samples.photo(200, 40),
        "corrupt_jpeg": samples.corrupt_jpeg,
    }[case]()
    resp = _submit(gateway, image=data)
    assert resp.status_code == status, resp.text
    assert resp.json() == {"error": {"code": code, "message": resp.json()["error"]["message"], "field": "face_image"}}
    assert resp.json()["error"]["message"]
    _nothing_stored(gateway, redis_client)


def test_exif_orientation_applied_before_storage(gateway):
    rid = _submit(gateway, image=samples.rotated_jpeg(160, 120, orientation=6)).json()["request_id"]
    stored = Image.open(io.BytesIO(gateway.storage.get_upload(gateway.store.get(rid).upload_key)))
    assert stored.size == (120, 160)
    assert stored.convert("RGB").getpixel((60, 10))[0] > 150  # red on top once upright


@pytest.mark.parametrize(
    "field,value,needle",
    [
        ("height_cm", "400", "50-300"),
        ("weight_kg", "5", "20-500"),
        ("num_images", "9", "1-4"),
        ("body_type", "giant", "slim, athletic"),
        ("width", "777", "multiple of 8"),
        ("guidance_scale", "50", "guidance_scale"),
    ],
)
def test_range_errors_name_field_and_range(gateway, redis_client, field, value, needle):
    resp = _submit(gateway, fields={**SEED_FIELDS, field: value})
    assert resp.status_code == 422
    error = resp.json()["error"]
    assert error["code"] == "invalid_parameter" and error["field"] == field
    assert needle in error["message"]
    _nothing_stored(gateway, redis_client)


def test_unknown_field_refused_by_name(gateway, redis_client):
    resp = _submit(gateway, fields={**SEED_FIELDS, "heigth_cm": "170"})
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] == "invalid_parameter" and resp.json()["error"]["field"] == "heigth_cm"
    _nothing_stored(gateway, redis_client)


def test_missing_photo(gateway, redis_client):
    resp = gateway.client.post(SUBMIT, data=SEED_FIELDS, files={"other": ("x.txt", b"x")})
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "other"
    resp = gateway.client.post(SUBMIT, data=SEED_FIELDS, files={})
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] in ("missing_field", "invalid_parameter")
    _nothing_stored(gateway, redis_client)


def test_enqueue_failure_leaves_no_job_and_answers_503(gateway, gateway_settings, redis_client):
    dead = gateway_settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    gateway.app.state.submit = dataclasses.replace(gateway.app.state.submit, celery=make_celery(dead))
    resp = _submit(gateway)
    assert resp.status_code == 503 and resp.json()["error"]["code"] == "service_unavailable"
    assert int(resp.headers["Retry-After"]) > 0
    # no record waits for a task that was never queued
    assert list(redis_client.scan_iter("job:*")) == [] and redis_client.zcard("jobs:queued") == 0
    assert gateway.storage.client.list_objects_v2(Bucket=gateway.storage.uploads_bucket).get("KeyCount", 0) == 0


# --- status and result ------------------------------------------------------------------------------


def _finish(gw: Gateway, rid: str, n: int = 2) -> None:
    gw.store.transition(rid, JobStatus.RUNNING, worker="test")
    images = []
    for i in range(n):
        png = samples.photo(64, 96, fmt="PNG")
        images.append({"id": f"identity_body_{i}", "key": gw.storage.put_result(rid, i, png), "width": 64, "height": 96,
                       "identity_score": round(0.9 - i / 10, 2), "face_found": True, "seed": 7 + i})
    face = {"bbox": [10.0, 20.0, 110.0, 150.0], "det_score": 0.93, "box_size": [100.0, 130.0]}
    done = gw.store.transition(rid, JobStatus.SUCCEEDED, result={
        "images": images, "analysis": {"skin_tone": "warm ivory", "face": face}, "method": "instantid",
        "profile": "tiny", "note": None})
    assert done is not None


def test_status_through_the_lifecycle(gateway):
    rid = _submit(gateway).json()["request_id"]
    url = f"/api/v1/jobs/{rid}"
    queued = gateway.client.get(url).json()
    assert queued["status"] == "queued" and queued["queue_position"] == 1
    assert queued["created_at"].endswith("Z") and queued["started_at"] is None

    gateway.store.transition(rid, JobStatus.RUNNING, worker="w")
    gateway.store.set_progress(rid, 3, 8)
    running = gateway.client.get(url).json()
    assert running["status"] == "running"
    assert running["progress"] == {"step": 3, "total": 8, "stage": None, "eta_s": None}
    assert "queue_position" not in running and running["started_at"]

    gateway.store.transition(rid, JobStatus.FAILED, error={"code": "no_face_detected", "message": "No face."})
    failed = gateway.client.get(url).json()
    assert failed["status"] == "failed" and failed["finished_at"]
    assert failed["error"] == {"code": "no_face_detected", "message": "No face."}


def test_result_shapes(gateway):
    rid = _submit(gateway).json()["request_id"]
    early = gateway.client.get(f"/api/v1/jobs/{rid}/result")
    assert early.status_code == 409 and early.json()["error"]["code"] == "job_not_finished"

    _finish(gateway, rid)
    status = gateway.client.get(f"/api/v1/jobs/{rid}").json()
    assert status["status"] == "succeeded" and status["result_url"].endswith(f"/api/v1/jobs/{rid}/result")
    result = gateway.client.get(f"/api/v1/jobs/{rid}/result").json()
    assert set(result) == {"success", "request_id", "count", "images", "analysis", "method", "profile", "note",
                           "input_face"}
    assert result["success"] is True and result["count"] == 2 and result["method"] == "instantid"
    assert result["profile"] == "tiny"
    assert [im["id"] for im in result["images"]] == ["identity_body_0", "identity_body_1"]
    assert [(im["identity_score"], im["face_found"], im["below_threshold"], im["seed"]) for im in result["images"]] == [
        (0.9, True, False, 7), (0.8, True, False, 8)]
    assert result["analysis"]["skin_tone"] == "warm ivory"
    assert result["input_face"] == status["input_face"] == {"det_score": 0.93, "box_size": [100.0, 130.0]}
    png = httpx.get(result["images"][1]["url"])
    assert png.status_code == 200 and Image.open(io.BytesIO(png.content)).size == (64, 96)


def test_result_of_failed_job(gateway):
    rid = _submit(gateway).json()["request_id"]
    gateway.store.transition(rid, JobStatus.FAILED, error={"code": "no_face_detected", "message": "No face."})
    resp = gateway.client.get(f"/api/v1/jobs/{rid}/result")
    assert resp.status_code == 200
    body = resp.json()
    assert body["success"] is False and body["count"] == 0 and body["images"] == []
    assert body["error"] == {"code": "no_face_detected", "message": "No face."}


def test_unknown_job_and_routes(gateway):
    for path in ("/api/v1/jobs/nope", "/api/v1/jobs/nope/result"):
        resp = gateway.client.get(path)
        assert resp.status_code == 404
        assert resp.json()["error"]["code"] == "job_not_found" and resp.json()["error"]["field"] == "request_id"
    resp = gateway.client.get("/api/v1/nothing-here")
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"
    resp = gateway.client.delete(SUBMIT)
    assert resp.status_code == 405 and resp.json()["error"]["code"] == "method_not_allowed"
    resp = gateway.client.post(SUBMIT, json={"body_type": "slim"})
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "invalid_parameter"


# --- Prefer: wait ---------------------------------------------------------------------------------------


def _wait_for_subscriber(gw: Gateway, redis_client) -> str:
    def waiting() -> str | None:
        keys = list(redis_client.scan_iter("job:*"))
        rid = keys[0].decode().split(":", 1)[1] if keys else None
        return rid if rid and redis_client.pubsub_numsub(f"job-finished:{rid}")[0][1] else None

    return until(waiting, 20, "the gateway to start waiting", interval_s=0.01)


def test_prefer_wait_returns_the_result_when_the_job_finishes(gateway, redis_client):
    box: dict[str, httpx.Response] = {}
    t = threading.Thread(target=lambda: box.update(resp=_submit(gateway, headers={"Prefer": "wait=30"})))
    t.start()
    rid = _wait_for_subscriber(gateway, redis_client)
    _finish(gateway, rid, n=1)
    t.join(30)
    resp = box["resp"]
    assert resp.status_code == 200 and resp.headers["Preference-Applied"] == "wait=30"
    assert resp.json()["success"] is True and resp.json()["request_id"] == rid and resp.json()["count"] == 1


def test_prefer_wait_failed_job_returns_status(gateway, redis_client):
    box: dict[str, httpx.Response] = {}
    t = threading.Thread(target=lambda: box.update(resp=_submit(gateway, headers={"Prefer": "wait=30"})))
    t.start()
    rid = _wait_for_subscriber(gateway, redis_client)
    gateway.store.transition(rid, JobStatus.FAILED, error={"code": "no_face_detected", "message": "No face."})
    t.join(30)
    assert box["resp"].status_code == 200
    assert box["resp"].json()["status"] == "failed" and box["resp"].json()["error"]["code"] == "no_face_detected"


def test_prefer_wait_times_out_with_202_and_is_clamped(gateway_settings, redis_client):
    app, server, thread = _serve(gateway_settings.model_copy(update={"max_wait_s": 1}))
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.config.port}", timeout=30) as client:
            resp = _submit(Gateway(app, client, ""), headers={"Prefer": "respond-async, wait=100"})
        assert resp.status_code == 202 and resp.headers["Preference-Applied"] == "wait=1"
        assert resp.json()["status"] == "queued" and resp.json()["queue_position"] == 1
    finally:
        server.should_exit = True
        thread.join(10)


# --- probes, OpenAPI, imports -------------------------------------------------------------------------------


def test_probes(gateway, redis_client):
    assert gateway.client.get("/healthz").json() == {"status": "ok"}
    resp = gateway.client.get("/readyz")
    assert resp.status_code == 503 and resp.json()["failed"] == ["workers"]
    assert resp.json()["checks"] == {"redis": True, "s3": True, "workers": False}
    gateway.store.heartbeat_worker("loading@host", {"pipeline_loaded": False}, ttl_s=30)
    assert gateway.client.get("/readyz").status_code == 503
    gateway.store.heartbeat_worker("gpu0@host", {"pipeline_loaded": True}, ttl_s=30)
    resp = gateway.client.get("/readyz")
    assert resp.status_code == 200 and resp.json()["status"] == "ready" and resp.json()["workers"] == 1


def test_openapi_has_examples_for_every_route_and_error(gateway):
    spec = gateway.client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for status, response in op["responses"].items():
                media = response.get("content", {})  # JSON, or the event stream's text/event-stream
                content = media.get("application/json") or next(iter(media.values()), {})
                ref = content.get("schema", {}).get("$ref", "")
                model = schemas.get(ref.rsplit("/", 1)[-1], {})
                has_example = "example" in content or "examples" in content or "examples" in model
                assert has_example, (path, method, status)
    assert "HTTPValidationError" not in schemas  # 422s are documented in our error shape
    body = spec["paths"][SUBMIT]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert {"face_image", "height_cm", "seed", "mode", "webhook_url"} <= set(body["schema"]["properties"])
    assert body["schema"]["properties"]["height_cm"]["maximum"] == 300


def test_gateway_imports_nothing_heavy():
    code = (
        "import sys, api.main\n"
        "heavy = [m for m in ('torch', 'diffusers', 'insightface', 'onnxruntime', 'transformers', 'numpy') if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(__import__("pathlib").Path(__file__).parents[2]))


def test_clients_are_reused_across_requests(gateway, redis_client):
    """Submits and status reads borrow pooled connections (Redis, and Celery's broker pool on the
    same server): once warm, more requests open no new connections."""
    def connections() -> int:
        return len(redis_client.client_list())

    rids = [_submit(gateway).json()["request_id"] for _ in range(3)]
    warm = connections()
    for _ in range(5):
        rids.append(_submit(gateway).json()["request_id"])
        assert gateway.client.get(f"/api/v1/jobs/{rids[-1]}").status_code == 200
    assert connections() == warm
    assert len(_queued_messages(redis_client)) == len(rids)


def test_status_reads_position_and_record_together(gateway):
    first, second = (_submit(gateway).json()["request_id"] for _ in range(2))
    gateway.store.transition(first, JobStatus.RUNNING, worker="w")
    running = gateway.client.get(f"/api/v1/jobs/{first}").json()
    queued = gateway.client.get(f"/api/v1/jobs/{second}").json()
    assert running["status"] == "running" and "queue_position" not in running
    assert queued["status"] == "queued" and queued["queue_position"] == 1
