"""Status, result, Prefer: wait, probes and the OpenAPI over real HTTP with real Valkey and SeaweedFS."""

from __future__ import annotations

import io
import subprocess
import sys
import threading

import httpx
import pytest
from PIL import Image

from idbody.stack.polling import until
from shared.jobs.record import JobStatus
from tests import image_samples as samples

pytestmark = pytest.mark.integration



from tests.api.gateway import SUBMIT, Gateway, queued_messages, serve, submit

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
        "profile": "tiny", "note": None, "parts": ["sdxl", "identitynet", "pose-prompt-only"],
        "identity_judge": "dlib-resnet", "identity_judge_independent": False, "safety_check": "nudenet-320n",
        "base_model": "tiny-alt"})
    assert done is not None


def test_status_through_the_lifecycle(gateway):
    rid = submit(gateway).json()["request_id"]
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
    rid = submit(gateway).json()["request_id"]
    early = gateway.client.get(f"/api/v1/jobs/{rid}/result")
    assert early.status_code == 409 and early.json()["error"]["code"] == "job_not_finished"

    _finish(gateway, rid)
    status = gateway.client.get(f"/api/v1/jobs/{rid}").json()
    assert status["status"] == "succeeded" and status["result_url"].endswith(f"/api/v1/jobs/{rid}/result")
    result = gateway.client.get(f"/api/v1/jobs/{rid}/result").json()
    assert set(result) == {"success", "request_id", "count", "images", "analysis", "method", "profile", "note",
                           "parts", "identity_judge", "identity_judge_independent", "safety_check", "base_model",
                           "pose_source", "input_face", "face_image_count", "keypoints_face_image"}
    assert result["base_model"] == "tiny-alt"
    assert (result["identity_judge"], result["identity_judge_independent"], result["safety_check"]) == (
        "dlib-resnet", False, "nudenet-320n")
    assert result["parts"] == ["sdxl", "identitynet", "pose-prompt-only"]
    assert result["success"] is True and result["count"] == 2 and result["method"] == "instantid"
    assert result["profile"] == "tiny"
    assert [im["id"] for im in result["images"]] == ["identity_body_0", "identity_body_1"]
    assert [(im["identity_score"], im["face_found"], im["below_threshold"], im["seed"]) for im in result["images"]] == [
        (0.9, True, False, 7), (0.8, True, False, 8)]
    assert result["analysis"]["skin_tone"] == "warm ivory"
    assert result["input_face"] == status["input_face"] == {"det_score": 0.93, "box_size": [100.0, 130.0]}
    png = httpx.get(result["images"][1]["url"])
    assert png.status_code == 200 and Image.open(io.BytesIO(png.content)).size == (64, 96)
    # a record written before output formats existed still reads as a PNG
    assert [(im["content_type"], im["file_name"]) for im in result["images"]] == [
        ("image/png", "identity_body_0.png"), ("image/png", "identity_body_1.png")]
    assert [im["nsfw"] for im in result["images"]] == [None, None]


def test_result_of_failed_job(gateway):
    rid = submit(gateway).json()["request_id"]
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
    t = threading.Thread(target=lambda: box.update(resp=submit(gateway, headers={"Prefer": "wait=30"})))
    t.start()
    rid = _wait_for_subscriber(gateway, redis_client)
    _finish(gateway, rid, n=1)
    t.join(30)
    resp = box["resp"]
    assert resp.status_code == 200 and resp.headers["Preference-Applied"] == "wait=30"
    assert resp.json()["success"] is True and resp.json()["request_id"] == rid and resp.json()["count"] == 1


def test_prefer_wait_failed_job_returns_status(gateway, redis_client):
    box: dict[str, httpx.Response] = {}
    t = threading.Thread(target=lambda: box.update(resp=submit(gateway, headers={"Prefer": "wait=30"})))
    t.start()
    rid = _wait_for_subscriber(gateway, redis_client)
    gateway.store.transition(rid, JobStatus.FAILED, error={"code": "no_face_detected", "message": "No face."})
    t.join(30)
    assert box["resp"].status_code == 200
    assert box["resp"].json()["status"] == "failed" and box["resp"].json()["error"]["code"] == "no_face_detected"


def test_prefer_wait_times_out_with_202_and_is_clamped(gateway_settings, redis_client):
    app, server, thread = serve(gateway_settings.model_copy(update={"max_wait_s": 1}))
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.config.port}", timeout=30) as client:
            resp = submit(Gateway(app, client, ""), headers={"Prefer": "respond-async, wait=100"})
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

    rids = [submit(gateway).json()["request_id"] for _ in range(3)]
    warm = connections()
    for _ in range(5):
        rids.append(submit(gateway).json()["request_id"])
        assert gateway.client.get(f"/api/v1/jobs/{rids[-1]}").status_code == 200
    assert connections() == warm
    assert len(queued_messages(redis_client)) == len(rids)


def test_status_reads_position_and_record_together(gateway):
    first, second = (submit(gateway).json()["request_id"] for _ in range(2))
    gateway.store.transition(first, JobStatus.RUNNING, worker="w")
    running = gateway.client.get(f"/api/v1/jobs/{first}").json()
    queued = gateway.client.get(f"/api/v1/jobs/{second}").json()
    assert running["status"] == "running" and "queue_position" not in running
    assert queued["status"] == "queued" and queued["queue_position"] == 1
