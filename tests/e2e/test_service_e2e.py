"""The job service end to end on real processes: Valkey + SeaweedFS (conftest), the gateway as a
subprocess, real Celery GPU-queue workers running the tiny profile, real HTTP."""

from __future__ import annotations

import io
import os
import signal

import httpx
import pytest
from PIL import Image

from idbody.stack.polling import until
from idbody.stack.service import ServiceStack, running_stack, stack_settings
from shared.jobs.store import JobStore
from shared.storage import Storage
from tests.e2e.limits import StackLimits, measure_limits
from tests.face_photos import tom_jpeg
from tests.image_samples import uniform_jpeg

pytestmark = pytest.mark.integration

SUBMIT = "/api/v1/generate-identity-body"
# The seed's curl fields, unchanged, plus a small output size to keep CPU generation quick.
SEED_FIELDS = {
    "body_type": "athletic", "height_cm": "170", "weight_kg": "65", "gender": "female",
    "num_images": "4", "use_gemini_analysis": "true", "width": "128", "height": "128", "num_inference_steps": "4",
}


@pytest.fixture(scope="module")
def limits(tiny_engine) -> StackLimits:
    """Short enough that a SIGKILLed worker's task comes back within the test, long enough for the
    slowest job at this machine's measured speed; the soft limit (enforced per step by the worker)
    stays below the visibility timeout so no live job is ever redelivered."""
    return measure_limits(tiny_engine)


@pytest.fixture(scope="module")
def service(valkey, s3_server, tmp_path_factory, limits):
    settings = stack_settings(
        valkey, s3_server, 3, "e2e",
        tiny_model_dir=tmp_path_factory.getbasetemp() / "tiny-models",
        model_profile="tiny",
        auth_disabled=True,
        device="cpu",
        **limits.settings(),
        worker_heartbeat_ttl_s=6,
    )
    with running_stack(settings, tmp_path_factory.mktemp("service-logs"), io_worker=None) as stack:
        yield stack


def submit(service: ServiceStack, image: bytes, headers: dict | None = None, **overrides: str) -> httpx.Response:
    fields = {**SEED_FIELDS, **overrides}
    files = {"face_image": ("user_photo.jpg", image, "image/jpeg")}
    return httpx.post(service.base_url + SUBMIT, data=fields, files=files, headers=headers or {}, timeout=90)


def poll(service: ServiceStack, status_url: str, deadline_s: float = 90) -> tuple[dict, list[dict]]:
    """GET the status until the job finishes; returns the final body and every body seen."""
    seen: list[dict] = []

    def finished() -> dict | None:
        seen.append(httpx.get(status_url, timeout=10).json())
        return seen[-1] if seen[-1]["status"] in ("succeeded", "failed", "canceled") else None

    try:
        return until(finished, deadline_s, "the job to finish"), seen
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; last status: {seen[-1] if seen else None}") from None


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
    # progress is written per denoise step: the record holds every step done (polls sample the
    # record, and a fast machine may run a tiny job's steps between two of them: a running status
    # seen carries its progress, and the killed-worker test below waits for a step on the record)
    assert all(0 <= b["progress"]["step"] <= b["progress"]["total"] for b in seen if b["status"] == "running")
    record = JobStore.from_settings(service.settings).get(accepted["request_id"])
    # 4 base steps + the face-detail pass's int(4 × 0.4) = 1 step, one pass for all 4 images
    assert record.progress.total == 5 and record.progress.step == 5 and record.attempts == 1

    result = httpx.get(accepted["result_url"], timeout=10)
    assert result.status_code == 200
    assert_seed_result(result.json(), accepted["request_id"], 4, (128, 128))
    # a real photo, found by the tiny profile's real analyzer; every image says whether it shows a face
    body = result.json()
    assert body["profile"] == "tiny" and "random" in body["note"]
    assert body["input_face"] == final["input_face"] and body["input_face"]["det_score"] > 0.5
    for image in body["images"]:
        assert image["face_found"] is (image["identity_score"] is not None)


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


def test_worker_sigkilled_mid_job_is_redelivered_and_finishes_once(service, limits):
    service.start_worker("gpu1")
    service.wait_ready(timeout_s=150, workers=2)
    store = JobStore.from_settings(service.settings)
    storage = Storage.from_settings(service.settings)

    # a slower job so the kill lands mid-generation
    resp = submit(service, tom_jpeg(), num_images="1", num_inference_steps="12")
    assert resp.status_code == 202, resp.text
    rid = resp.json()["request_id"]

    def started():
        record = store.get(rid)
        assert not record.status.finished, f"job finished before the kill: {record}"
        return record if record.status == "running" and record.progress.step >= 1 else None

    record = until(started, 60, f"job {rid} to start its first step", interval_s=0.02)
    victim = int(record.worker.rsplit(":", 1)[1])
    assert victim in {p.pid for p in service.procs.values()}
    os.kill(victim, signal.SIGKILL)

    final, _ = poll(service, resp.json()["status_url"], deadline_s=limits.redelivered_within_s())
    record = store.get(rid)
    assert final["status"] == "succeeded", (
        f"the job of the killed worker (pid {victim}) did not succeed after redelivery ({limits.describe()}):"
        f"\n{final}\nrecord: {record}\n--- gpu1 log:\n{service.log('gpu1')}\n--- gpu0 log:\n{service.log('gpu0')}")
    assert record.attempts == 2, f"expected one redelivery, record says {record.attempts} attempts: {record}"
    assert not record.worker.endswith(f":{victim}")
    listed = storage.client.list_objects_v2(Bucket=storage.results_bucket, Prefix=f"{rid}/")
    keys = sorted(o["Key"] for o in listed.get("Contents", []))
    assert keys == sorted(img.key for img in record.result.images)
    assert len(keys) == 1
