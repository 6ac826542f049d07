"""Submitting over real HTTP (uvicorn on a loopback port) with real Valkey and SeaweedFS: the
seed's fields, upload and range errors, what a refused or failed submit leaves behind."""

from __future__ import annotations

import base64
import dataclasses
import io
import json

import httpx
import pytest
from PIL import Image

from idbody.stack.servers import free_port
from shared.celery_app import make_celery
from shared.jobs.record import JobStatus
from shared.queues import GENERATE_TASK
from tests import image_samples as samples

pytestmark = pytest.mark.integration



from tests.api.gateway import (
    SEED_FIELDS,
    SUBMIT,
    Gateway,
    nothing_stored,
    queued_messages,
    serve,
    submit,
)

# --- submit ---------------------------------------------------------------------------------------


def test_seed_curl_fields_accepted(gateway, redis_client):
    resp = submit(gateway)
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

    [message] = queued_messages(redis_client)
    assert message["headers"]["task"] == GENERATE_TASK and message["headers"]["id"] == rid
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert args == [rid] and kwargs == {}


def test_second_job_queues_behind_first(gateway):
    first = submit(gateway).json()
    second = submit(gateway).json()
    assert (first["queue_position"], second["queue_position"]) == (1, 2)


def test_webhook_url_stored(gateway):
    rid = submit(gateway, fields={**SEED_FIELDS, "webhook_url": "https://hooks.example.com/x"}).json()["request_id"]
    assert gateway.store.get(rid).webhook_url == "https://hooks.example.com/x"


def test_public_api_url_used_for_links(gateway_settings, redis_client):
    app, server, thread = serve(gateway_settings.model_copy(update={"public_api_url": "https://api.example.com/"}))
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.config.port}", timeout=30) as client:
            gw = Gateway(app, client, "")
            body = submit(gw).json()
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
    resp = submit(gateway, image=data)
    assert resp.status_code == status, resp.text
    assert resp.json() == {"error": {"code": code, "message": resp.json()["error"]["message"], "field": "face_image"}}
    assert resp.json()["error"]["message"]
    nothing_stored(gateway, redis_client)


def test_exif_orientation_applied_before_storage(gateway):
    rid = submit(gateway, image=samples.rotated_jpeg(160, 120, orientation=6)).json()["request_id"]
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
    resp = submit(gateway, fields={**SEED_FIELDS, field: value})
    assert resp.status_code == 422
    error = resp.json()["error"]
    assert error["code"] == "invalid_parameter" and error["field"] == field
    assert needle in error["message"]
    nothing_stored(gateway, redis_client)


def test_unknown_field_refused_by_name(gateway, redis_client):
    resp = submit(gateway, fields={**SEED_FIELDS, "heigth_cm": "170"})
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] == "invalid_parameter" and resp.json()["error"]["field"] == "heigth_cm"
    nothing_stored(gateway, redis_client)


def test_missing_photo(gateway, redis_client):
    resp = gateway.client.post(SUBMIT, data=SEED_FIELDS, files={"other": ("x.txt", b"x")})
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "other"
    resp = gateway.client.post(SUBMIT, data=SEED_FIELDS, files={})
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] in ("missing_field", "invalid_parameter")
    nothing_stored(gateway, redis_client)


def test_enqueue_failure_leaves_no_job_and_answers_503(gateway, gateway_settings, redis_client):
    dead = gateway_settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    gateway.app.state.submit = dataclasses.replace(gateway.app.state.submit, celery=make_celery(dead))
    resp = submit(gateway)
    assert resp.status_code == 503 and resp.json()["error"]["code"] == "service_unavailable"
    assert int(resp.headers["Retry-After"]) > 0
    # no record waits for a task that was never queued
    assert list(redis_client.scan_iter("job:*")) == [] and redis_client.zcard("jobs:queued") == 0
    assert gateway.storage.client.list_objects_v2(Bucket=gateway.storage.uploads_bucket).get("KeyCount", 0) == 0


