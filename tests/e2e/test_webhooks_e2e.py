"""Webhooks, API keys and cancel on the whole stack as real processes: the gateway, a GPU worker on
the tiny profile, an io worker, Valkey, SeaweedFS, and a webhook receiver on loopback."""

from __future__ import annotations

import json
import os
import signal

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from idbody.stack.polling import until
from idbody.stack.service import running_stack, stack_settings
from shared.access.api_keys import ApiKeyStore
from shared.jobs.store import JobStore
from shared.storage import Storage
from tests.e2e.limits import StackLimits, measure_limits
from tests.face_photos import tom_jpeg
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.integration

SUBMIT = "/api/v1/generate-identity-body"
FIELDS = {"body_type": "athletic", "height_cm": "170", "num_images": "1", "width": "128", "height": "128",
          "num_inference_steps": "4"}



@pytest.fixture(scope="module")
def limits(tiny_engine) -> StackLimits:
    return measure_limits(tiny_engine)


@pytest.fixture(scope="module")
def collector():
    """An OTLP/HTTP trace collector on loopback: every export the processes send, recorded."""
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def stack(valkey, s3_server, tmp_path_factory, limits, collector):
    settings = stack_settings(
        valkey, s3_server, 6, "wh", tiny_model_dir=tmp_path_factory.getbasetemp() / "tiny-models",
        model_profile="tiny", device="cpu", auth_disabled=False, webhook_allow_hosts=["127.0.0.1"],
        webhook_backoff_base_s=0.2, worker_heartbeat_ttl_s=6, **limits.settings(), log_format="json",
        otel_endpoint=f"http://127.0.0.1:{collector.port}",
    )
    with running_stack(settings, tmp_path_factory.mktemp("webhook-e2e-logs")) as s:
        yield s


@pytest.fixture
def key(stack):
    created = ApiKeyStore(JobStore.from_settings(stack.settings).client).create("e2e", 600, 10)
    return {"Authorization": f"Bearer {created.token}"}, created.key.webhook_secret


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def _submit(stack, headers, **fields) -> dict:
    r = httpx.post(stack.base_url + SUBMIT, data={**FIELDS, **fields}, headers=headers, timeout=60,
                   files={"face_image": ("me.jpg", tom_jpeg(), "image/jpeg")})
    assert r.status_code == 202, r.text
    return r.json()


def _status(stack, headers, rid) -> dict:
    return httpx.get(f"{stack.base_url}/api/v1/jobs/{rid}", headers=headers, timeout=10).json()


def _finished(stack, headers, rid, deadline_s=90) -> dict:
    # polled at 4/s: a wait through a redelivery lasts minutes on a loaded machine, and the key's
    # rate limit (600/min) must never answer a poll with 429 instead of the status
    return until(lambda: (b := _status(stack, headers, rid))["status"] in ("succeeded", "failed", "canceled") and b,
                  deadline_s, f"job {rid} to finish", interval_s=0.25)


def test_finished_job_webhook_retried_then_delivered_once_and_upload_deleted(stack, key, receiver):
    headers, secret = key
    receiver.script = [503, 200]
    rid = _submit(stack, headers, webhook_url=receiver.url())["request_id"]
    assert _finished(stack, headers, rid)["status"] == "succeeded"
    body = until(lambda: (b := _status(stack, headers, rid))["webhook_attempts"][-1:]
                  and b["webhook_attempts"][-1]["status_code"] == 200 and b, 60, "the delivery")
    assert [a["status_code"] for a in body["webhook_attempts"]] == [503, 200]
    assert len(receiver.requests) == 2
    delivered = receiver.requests[-1]
    event = Webhook(secret).verify(delivered.body, delivered.headers)
    assert event["request_id"] == rid and event["status"] == "succeeded" and event["result_url"].endswith("/result")
    # the links a receiver acts on: the job's URLs on the public base, and images that download
    assert event["status_url"] == f"{stack.base_url}/api/v1/jobs/{rid}"
    assert httpx.get(event["status_url"], headers=headers, timeout=10).json()["status"] == "succeeded"
    assert httpx.get(event["result_url"], headers=headers, timeout=10).json()["count"] == 1
    assert [image["id"] for image in event["images"]] == [
        image["id"] for image in httpx.get(event["result_url"], headers=headers, timeout=10).json()["images"]]
    for image in event["images"]:
        fetched = httpx.get(image["url"], timeout=10)
        assert fetched.status_code == 200 and fetched.content.startswith(b"\x89PNG"), image["url"]
    storage = Storage.from_settings(stack.settings)
    assert storage.client.list_objects_v2(Bucket=storage.uploads_bucket, Prefix=f"{rid}/").get("KeyCount") == 0


def _json_lines(stack, name: str) -> list[dict]:
    """The process's log lines that are log records (JSON objects); each must parse."""
    text = (stack.log_dir / f"{name}.log").read_text(errors="replace")
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _event(stack, name: str, rid: str, event: str) -> dict | None:
    return next((line for line in _json_lines(stack, name)
                 if line.get("request_id") == rid and line.get("event") == event), None)


def test_json_logs_follow_one_request_id_from_submit_to_webhook(stack, key, receiver):
    headers, _ = key
    rid = _submit(stack, headers, webhook_url=receiver.url())["request_id"]
    assert _finished(stack, headers, rid)["status"] == "succeeded"
    delivered = until(lambda: _event(stack, "io0", rid, "webhook.attempt"), 60, "the webhook's log line")
    submitted = _event(stack, "api", rid, "job.submitted")
    started = _event(stack, "gpu0", rid, "job.started")
    finished = _event(stack, "gpu0", rid, "job.finished")
    assert submitted and submitted["status"] == "queued" and submitted["level"] == "INFO"
    assert started and started["queue_wait_s"] >= 0 and started["attempt"] == 1
    assert finished and finished["status"] == "succeeded" and finished["duration_s"] > 0
    assert finished["worker"] and finished["worker"] == started["worker"]
    assert delivered["outcome"] == "delivered" and delivered["status"] == "succeeded"
    # the gateway's access lines are JSON as well
    assert any("/api/v1/generate-identity-body" in line["message"] for line in _json_lines(stack, "api"))


def _spans(collector) -> list:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    found = []
    for request in list(collector.requests):
        export = ExportTraceServiceRequest.FromString(request.body)
        found += [s for rs in export.resource_spans for ss in rs.scope_spans for s in ss.spans]
    return found


def _job_spans(collector, rid: str) -> dict:
    def request_id(s) -> str | None:
        return next((a.value.string_value for a in s.attributes if a.key == "idbody.request_id"), None)

    return {s.name: s for s in _spans(collector) if request_id(s) == rid}


def test_one_trace_spans_submit_task_and_webhook(stack, key, receiver, collector):
    headers, _ = key
    rid = _submit(stack, headers, webhook_url=receiver.url())["request_id"]
    assert _finished(stack, headers, rid)["status"] == "succeeded"
    names = {"idbody.submit", "idbody.generate", "idbody.webhook"}
    spans = until(lambda: names <= set(found := _job_spans(collector, rid)) and found, 60, "the three spans exported")
    submit, generate, webhook = spans["idbody.submit"], spans["idbody.generate"], spans["idbody.webhook"]
    assert submit.trace_id == generate.trace_id == webhook.trace_id
    assert generate.parent_span_id == submit.span_id
    assert webhook.parent_span_id == generate.span_id


def test_cancel_running_and_queued_jobs_on_a_real_worker(stack, key, receiver):
    headers, secret = key
    # 40 steps (fast (LCM) mode refuses more than 50 inside diffusers) at 512 px: long enough that a
    # fast machine is still denoising while the test submits, checks and cancels
    slow = _submit(stack, headers, num_inference_steps="40", width="512", height="512",
                   webhook_url=receiver.url())["request_id"]
    until(lambda: _status(stack, headers, slow).get("progress", {}).get("step", 0) >= 1, 60, "the slow job to run")
    queued = _submit(stack, headers)["request_id"]
    assert _status(stack, headers, queued)["status"] == "queued"
    r = httpx.post(f"{stack.base_url}/api/v1/jobs/{queued}/cancel", headers=headers, timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "canceled"
    r = httpx.post(f"{stack.base_url}/api/v1/jobs/{slow}/cancel", headers=headers, timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "canceled"
    # the worker stops the slow job at its next step and is free again: a new job succeeds
    after = _submit(stack, headers)["request_id"]
    assert _finished(stack, headers, after)["status"] == "succeeded"
    store = JobStore.from_settings(stack.settings)
    never_ran = store.get(queued)
    assert never_ran.started_at is None and never_ran.attempts == 0 and never_ran.status == "canceled"
    stopped = store.get(slow)
    assert stopped.status == "canceled" and stopped.result is None and stopped.progress.step < 40
    until(lambda: receiver.requests, 30, "the canceled webhook")
    event = Webhook(secret).verify(receiver.requests[0].body, receiver.requests[0].headers)
    assert event["request_id"] == slow and event["status"] == "canceled"
    again = httpx.post(f"{stack.base_url}/api/v1/jobs/{slow}/cancel", headers=headers, timeout=10)
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_already_finished"


def test_gpu_worker_sigkilled_mid_job_still_one_delivery(stack, key, receiver, limits):
    headers, _ = key
    stack.start_worker("gpu1")
    stack.wait_ready(timeout_s=150, workers=2)
    store = JobStore.from_settings(stack.settings)
    rid = _submit(stack, headers, num_inference_steps="12", webhook_url=receiver.url())["request_id"]
    record = until(lambda: (r := store.get(rid)).status == "running" and r.progress.step >= 1 and r, 60, "running")
    victim = int(record.worker.rsplit(":", 1)[1])
    os.kill(victim, signal.SIGKILL)
    final = _finished(stack, headers, rid, deadline_s=limits.redelivered_within_s())
    assert final["status"] == "succeeded", (
        f"the killed worker's job did not succeed after redelivery ({limits.describe()}): {final}\n"
        f"record: {store.get(rid)}\n--- gpu1 log:\n{stack.log('gpu1')}")
    assert store.get(rid).attempts == 2, f"expected one redelivery: {store.get(rid)}"
    # the io worker records its attempt on the job after the receiver has answered: wait for that
    # record, not for the request (the receiver sees the request first; a busy machine showed it)
    attempts = until(lambda: store.get(rid).webhook_attempts, 30, "the delivery's attempt on the job record")
    until(lambda: store.client.llen("io") == 0, 10, "the io queue to drain")
    assert len(receiver.requests) == 1, f"delivered {len(receiver.requests)} times: {attempts}"
    assert len(store.get(rid).webhook_attempts) == 1
