"""What the web page stands on, over real HTTP with real Valkey and SeaweedFS: the page and its
assets at ``/``, ``GET /api/v1/info``, the deployment's default size, and the job event stream."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from api.routes.info import TINY_NOTICE
from api.routes.page import WEB_DIR
from shared.jobs.record import JobStatus
from shared.params import GenerationParams
from shared.queues import GPU_QUEUE
from tests.api.gateway import Gateway, serve, submit

pytestmark = pytest.mark.integration


def test_the_page_and_its_assets_are_served_from_the_package(gateway: Gateway):
    page = gateway.client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assets = re.findall(r'(?:src|href)="(web/[^"]+)"', page.text)
    assert {"web/app.js", "web/style.css"} <= set(assets)
    for asset in assets:
        assert gateway.client.get("/" + asset).status_code == 200, asset
    icon = gateway.client.get("/favicon.ico")  # asked for by browsers whatever the page links
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/x-icon"
    assert icon.content == (WEB_DIR / "favicon.ico").read_bytes()


def test_the_page_fetches_nothing_from_elsewhere():
    for path in WEB_DIR.iterdir():
        if path.suffix == ".ico":
            continue  # an image
        text = path.read_text()
        assert not re.search(r"https?://", text), f"{path.name} names an outside address"
        # ranges live in shared/params.py; the page reads them from /api/v1/info
        assert "2048" not in text and "300" not in text, f"{path.name} repeats a parameter range"


def test_info_carries_the_parameter_schema_and_the_tiny_notice(gateway: Gateway):
    assert gateway.client.get("/api/v1/info").json()["default_size"] == {"width": 832, "height": 1216}  # no worker yet
    gateway.store.heartbeat_worker("gpu0@test", {"profile": "tiny", "pipeline_loaded": True,
                                                 "default_size": [104, 152]}, 30)
    info = gateway.client.get("/api/v1/info").json()
    assert info["params"] == GenerationParams.model_json_schema()
    assert info["profiles"] == ["tiny"] and info["workers"] == 1
    assert info["notice"] == TINY_NOTICE and "noise" in info["notice"]
    assert info["auth_required"] is False
    assert info["default_size"] == {"width": 104, "height": 152}  # what the live worker's engine makes
    assert {"width": 256, "height": 256} in info["size_presets"]
    assert all(size["width"] * size["height"] <= 512 * 512 for size in info["size_presets"])  # noise stays small


def test_info_carries_each_live_workers_memory_plan(gateway: Gateway):
    from worker.engine.memory_plan import Shape, card_free_gib, choose_plan, manifest_weights

    assert gateway.client.get("/api/v1/info").json()["memory_plans"] == []
    plan = choose_plan(manifest_weights(), card_free_gib(4.0), Shape(832, 1216)).report()
    gateway.store.heartbeat_worker("gpu0@test", {"profile": "instantid", "pipeline_loaded": True,
                                                 "memory_plan": plan}, 30)
    gateway.store.heartbeat_worker("gpu1@test", {"profile": "instantid", "pipeline_loaded": False,
                                                 "memory_plan": plan}, 30)   # still loading: not counted
    (listed,) = gateway.client.get("/api/v1/info").json()["memory_plans"]
    assert listed == {"worker_id": "gpu0@test", **plan} and listed["name"] == "group-offload"


def test_info_lists_the_styles_and_output_formats_the_parameters_accept(gateway: Gateway):
    info = gateway.client.get("/api/v1/info").json()
    props = info["params"]["properties"]
    assert [s["name"] for s in info["styles"]] == props["style"]["enum"]
    assert len(info["styles"]) >= 6 and all(s["description"] for s in info["styles"])
    formats = {f["name"]: f for f in info["output_formats"]}
    assert list(formats) == props["output_format"]["enum"] == ["png", "jpeg", "webp"]
    assert formats["jpeg"]["content_type"] == "image/jpeg" and formats["jpeg"]["lossy"] is True
    assert formats["png"]["lossy"] is False


def test_info_lists_the_workers_bases_and_submit_refuses_a_name_none_offers(gateway: Gateway, redis_client):
    # no live worker: nothing to check against, the job is accepted (a worker refuses it if it must)
    assert gateway.client.get("/api/v1/info").json()["base_models"] == []
    assert submit(gateway, fields={"base_model": "mine"}).status_code == 202
    tiny = {"name": "tiny", "default": True, "digest": "0123456789ab"}
    alt = {"name": "tiny-alt", "default": False, "digest": "ba9876543210"}
    gateway.store.heartbeat_worker("gpu0@test", {"profile": "tiny", "pipeline_loaded": True, "base_models": [tiny, alt]}, 30)
    gateway.store.heartbeat_worker("gpu1@test", {"profile": "tiny", "pipeline_loaded": True, "base_models": [tiny]}, 30)
    assert gateway.client.get("/api/v1/info").json()["base_models"] == [tiny, alt]   # each base once
    queued = redis_client.llen(GPU_QUEUE)
    refused = submit(gateway, fields={"base_model": "juggernaut"})
    assert refused.status_code == 422
    error = refused.json()["error"]
    assert (error["code"], error["field"]) == ("unknown_base_model", "base_model")
    assert "tiny, tiny-alt" in error["message"]
    assert redis_client.llen(GPU_QUEUE) == queued   # nothing was enqueued for it
    accepted = submit(gateway, fields={"base_model": "tiny-alt"})
    assert accepted.status_code == 202
    assert gateway.store.get(accepted.json()["request_id"]).params["base_model"] == "tiny-alt"


@contextmanager
def served(settings) -> Iterator[Gateway]:
    app, server, thread = serve(settings)
    base = f"http://127.0.0.1:{server.config.port}"
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            yield Gateway(app, client, base)
    finally:
        server.should_exit = True
        thread.join(10)


def test_info_says_when_a_key_is_needed_and_no_notice_for_real_weights(gateway_settings, redis_client):
    settings = gateway_settings.model_copy(update={"auth_disabled": False, "model_profile": "auto"})
    with served(settings) as gw:
        gw.store.heartbeat_worker("gpu0@test", {"profile": "instantid", "pipeline_loaded": True}, 30)
        info = gw.client.get("/api/v1/info").json()
    assert info["auth_required"] is True
    assert info["profiles"] == ["instantid"] and info["notice"] is None
    assert {"width": 832, "height": 1216} in info["size_presets"]


def test_a_submit_without_a_size_gets_the_deployment_default(gateway_settings, redis_client):
    with served(gateway_settings.model_copy(update={"default_width": 256, "default_height": 256})) as gw:
        plain = submit(gw).json()["request_id"]
        sized = submit(gw, fields={"width": "512", "height": "128"}).json()["request_id"]
        assert gw.client.get("/api/v1/info").json()["default_size"] == {"width": 256, "height": 256}
        records = gw.store.get(plain), gw.store.get(sized)
    assert [(r.params["width"], r.params["height"]) for r in records] == [(256, 256), (512, 128)]


def _events(lines) -> Iterator[tuple[str, dict]]:
    event = None
    for line in lines:
        if line.startswith("event: "):
            event = line[len("event: "):]
        elif line.startswith("data: "):
            yield event, json.loads(line[len("data: "):])


def test_the_event_stream_follows_the_record_to_the_end(gateway: Gateway):
    rid = submit(gateway).json()["request_id"]
    store = gateway.store
    with gateway.client.stream("GET", f"/api/v1/jobs/{rid}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = _events(response.iter_lines())
        kind, first = next(events)
        assert kind == "status" and first["status"] == "queued" and first["queue_position"] == 1
        store.transition(rid, JobStatus.RUNNING, worker="w")
        store.set_progress(rid, 3, 8, stage="denoising", eta_s=2.5)
        kind, running = next(events)
        while running["progress"]["step"] != 3:  # the stream may catch the record between the writes
            kind, running = next(events)
        assert running["progress"] == {"step": 3, "total": 8, "stage": "denoising", "eta_s": 2.5}
        store.transition(rid, JobStatus.FAILED, error={"code": "no_face_detected", "message": "No face."})
        kind, last = next(events)
        assert last["status"] == "failed" and last["error"]["code"] == "no_face_detected"
        assert next(events, None) is None  # the stream ends after the finished status


def test_the_event_stream_of_an_unknown_job_is_a_404_error(gateway: Gateway):
    response = gateway.client.get("/api/v1/jobs/nope/events")
    assert response.status_code == 404 and response.json()["error"]["code"] == "job_not_found"


def test_openapi_documents_the_event_stream_and_info(gateway: Gateway):
    paths = gateway.client.get("/openapi.json").json()["paths"]
    assert "text/event-stream" in paths["/api/v1/jobs/{request_id}/events"]["get"]["responses"]["200"]["content"]
    assert "/api/v1/info" in paths and "/" not in paths


def test_a_stream_still_open_after_its_time_limit_ends_and_can_be_opened_again(gateway: Gateway):
    import anyio

    from api.job_events import status_events
    from api.job_watch import JobWatcher

    rid = submit(gateway).json()["request_id"]
    first = gateway.client.get(f"/api/v1/jobs/{rid}").json()

    async def collect() -> tuple[list[str], int]:
        watcher = JobWatcher(gateway.store, max_streams=10, max_per_key=10, poll_s=0.05)
        stream = status_events(watcher.watch(rid, None), gateway.base_url, first, keepalive_s=0.1, max_s=0.5)
        chunks = [chunk async for chunk in stream]
        await watcher.stop()
        return chunks, watcher.open_streams

    chunks, still_open = anyio.run(collect)
    assert still_open == 0  # the ended stream gave its place back
    assert chunks[0].startswith("id: 1\nevent: status\n") and '"status":"queued"' in chunks[0]
    assert ": keep-alive\n\n" in chunks[1:]  # the job stayed queued: only keep-alives followed
    assert gateway.store.get(rid).status.value == "queued"
