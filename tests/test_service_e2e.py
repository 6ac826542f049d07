"""The job service end to end on real processes: Valkey + SeaweedFS (conftest), the gateway as a
subprocess, real Celery GPU-queue workers running the tiny profile, real HTTP."""

from __future__ import annotations

import io
import os
import signal
import time

import httpx
import pytest
from PIL import Image

from shared.job_store import JobStore
from shared.storage import Storage
from tests.face_photos import tom_jpeg
from tests.service_stack import ServiceStack, uniform_jpeg, stack_settings

pytestmark = pytest.mark.integration

SUBMIT = "/api/v1/generate-identity-body"
# The seed's curl fields, unchanged, plus a small output size to keep CPU generation quick.
SEED_FIELDS = {
    "body_type": "athletic", "height_cm": "170", "weight_kg": "65", "gender": "female",
    "num_images": "4", "use_gemini_analysis": "true", "width": "128", "height": "128", "num_inference_steps": "4",
}
# Short enough that a SIGKILLed worker's task comes back within the test; the soft limit (enforced
# per step by the worker) stays below the visibility timeout so no live job is ever redelivered.
SOFT_LIMIT_S, HARD_LIMIT_S, VISIBILITY_S = 45, 46, 48


@pytest.fixture(scope="module")
def service(valkey, s3_server, tmp_path_factory):
    settings = stack_settings(
        valkey, s3_server, 3, "e2e",
        tiny_model_dir=tmp_path_factory.getbasetemp() / "tiny-models",
        model_profile="tiny",
        auth_disabled=True,
        device="cpu",
        task_soft_time_limit_s=SOFT_LIMIT_S,
        task_time_limit_s=HARD_LIMIT_S,
        broker_visibility_timeout_s=VISIBILITY_S,
        worker_heartbeat_ttl_s=6,
    )
    JobStore.from_settings(settings).client.flushdb()
    Storage.from_settings(settings).ensure_buckets()
    with ServiceStack(settings, tmp_path_factory.mktemp("service-logs")) as stack:
        stack.start_gateway()
        stack.start_worker("gpu0")
        stack.wait_ready(timeout_s=150)
        yield stack


def submit(service: ServiceStack, image: bytes, headers: dict | None = None, **overrides: str) -> httpx.Response:
    fields = {**SEED_FIELDS, **overrides}
    files = {"face_image": ("user_photo.jpg", image, "image/jpeg")}
    return httpx.post(service.base_url + SUBMIT, data=fields, files=files, headers=headers or {}, timeout=90)


def poll(service: ServiceStack, status_url: str, deadline_s: float = 90) -> tuple[dict, list[dict]]:
    """GET the status until the job finishes; returns the final body and every body seen."""
    seen: list[dict] = []
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        body = httpx.get(status_url, timeout=10).json()
        seen.append(body)
        if body["status"] in ("succeeded", "failed", "canceled"):
            return body, seen
        time.sleep(0.05)
    raise AssertionError(f"job did not finish within {deadline_s}s; last: {seen[-1] if seen else None}")


def assert_seed_result(result: dict, request_id: str, count: int, size: tuple[int, int]) -> None:
    assert set(result) >= {"success", "request_id", "count", "images", "analysis", "method", "note"}
    assert result["success"] is True and result["request_id"] == request_id
    assert result["count"] == count == len(result["images"])
    assert result["method"] in ("instantid", "sdxl_fallback")
    assert len({img["id"] for img in result["images"]}) == count
    for img in result["images"]:
        resp = httpx.get(img["url"], timeout=30)
        assert resp.status_code == 200, resp.text[:200]
        png = Image.open(io.BytesIO(resp.content))
        assert png.format == "PNG" and png.size == size


def test_seed_curl_to_result_images(service):
    resp = submit(service, tom_jpeg())
    assert resp.status_code == 202, resp.text
    accepted = resp.json()
    assert set(accepted) >= {"request_id", "status", "status_url", "result_url", "cancel_url", "queue_position"}
    assert accepted["status"] == "queued"

    final, seen = poll(service, accepted["status_url"])
    assert final["status"] == "succeeded", str(final)
    assert all(b["status"] in ("queued", "running", "succeeded") for b in seen)
    # progress is written per denoise step: polls saw it move while running, and the record
    # holds every step done
    steps_seen = {b["progress"]["step"] for b in seen if b["status"] == "running" and b.get("progress")}
    assert steps_seen and max(steps_seen) >= 1
    record = JobStore.from_settings(service.settings).get(accepted["request_id"])
    assert record.progress.total == 4 and record.progress.step == 4 and record.attempts == 1

    result = httpx.get(accepted["result_url"], timeout=10)
    assert result.status_code == 200
    assert_seed_result(result.json(), accepted["request_id"], 4, (128, 128))


def test_prefer_wait_answers_with_the_result(service):
    resp = submit(service, tom_jpeg(), headers={"Prefer": "wait=60"}, num_images="1")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert_seed_result(body, body["request_id"], 1, (128, 128))


def test_no_face_fails_and_the_same_worker_serves_the_next_job(service):
    worker_pid = service.procs["gpu0"].pid
    resp = submit(service, uniform_jpeg(), num_images="1")
    assert resp.status_code == 202, resp.text
    failed, _ = poll(service, resp.json()["status_url"])
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "no_face_detected"
    assert failed["error"]["message"]

    result = httpx.get(resp.json()["result_url"], timeout=10)
    assert result.status_code == 409 or result.json().get("success") is False

    good = submit(service, tom_jpeg(), num_images="1")
    final, _ = poll(service, good.json()["status_url"])
    assert final["status"] == "succeeded", str(final)
    store = JobStore.from_settings(service.settings)
    for rid in (resp.json()["request_id"], good.json()["request_id"]):
        assert store.get(rid).worker.endswith(f":{worker_pid}")
    assert service.procs["gpu0"].poll() is None


def test_worker_sigkilled_mid_job_is_redelivered_and_finishes_once(service):
    service.start_worker("gpu1")
    service.wait_ready(timeout_s=150, workers=2)
    store = JobStore.from_settings(service.settings)
    storage = Storage.from_settings(service.settings)

    # a slower job so the kill lands mid-generation
    resp = submit(service, tom_jpeg(), num_images="1", num_inference_steps="12")
    assert resp.status_code == 202, resp.text
    rid = resp.json()["request_id"]

    deadline = time.monotonic() + 60
    record = store.get(rid)
    while not (record.status == "running" and record.progress.step >= 1):
        assert time.monotonic() < deadline, f"job never started: {record}"
        assert not record.status.finished, f"job finished before the kill: {record}"
        time.sleep(0.02)
        record = store.get(rid)
    victim = int(record.worker.rsplit(":", 1)[1])
    assert victim in {p.pid for p in service.procs.values()}
    os.kill(victim, signal.SIGKILL)

    final, _ = poll(service, resp.json()["status_url"], deadline_s=VISIBILITY_S + 60)
    assert final["status"] == "succeeded", str(final)
    record = store.get(rid)
    assert record.attempts == 2
    assert not record.worker.endswith(f":{victim}")
    listed = storage.client.list_objects_v2(Bucket=storage.results_bucket, Prefix=f"{rid}/")
    keys = sorted(o["Key"] for o in listed.get("Contents", []))
    assert keys == sorted(img.key for img in record.result.images)
    assert len(keys) == 1
