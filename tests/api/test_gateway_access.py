"""API keys, rate limits, idempotency, cancel, delete and metrics through the real FastAPI app on
real Valkey and SeaweedFS (in-process HTTP via TestClient; the app's lifespan builds the clients)."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.main import create_app
from shared.access.api_keys import ApiKeyStore
from shared.errors import ErrorCode, IdentityBodyError
from shared.jobs.record import JobStatus
from shared.jobs.store import JobStore
from worker.jobs.runner import run_job

SUBMIT = "/api/v1/generate-identity-body"


def _png(color=(200, 170, 150)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (128, 128), color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def gw_settings(settings):
    return settings.model_copy(update={"auth_disabled": False})


@pytest.fixture
def client(gw_settings, redis_client):
    with TestClient(create_app(gw_settings)) as c:
        yield c


def _key(redis_client, **limits) -> tuple[str, str, str]:
    created = ApiKeyStore(redis_client).create(
        limits.pop("name", "k"), rate_limit_per_min=limits.get("rate", 100),
        max_queued_jobs=limits.get("queued", 10), webhook_url=limits.get("webhook_url"))
    return created.token, created.key.id, created.key.webhook_secret


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _submit(client, token, headers=None, image=None, **fields):
    data = {"body_type": "athletic", "height_cm": "170", "num_images": "1", **fields}
    return client.post(SUBMIT, headers={**_auth(token), **(headers or {})}, data=data,
                       files={"face_image": ("face.png", image or _png(), "image/png")})


def _objects(storage) -> list[str]:
    out = []
    for bucket in (storage.uploads_bucket, storage.results_bucket):
        out += [o["Key"] for o in storage.client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return out


def _error(response) -> str:
    return response.json()["error"]["code"]


def test_requests_without_a_valid_key_get_401(client, redis_client):
    for headers in ({}, {"Authorization": "Bearer idb_wrong"}, {"Authorization": "Basic abc"}):
        r = client.get("/api/v1/jobs/whatever", headers=headers)
        assert r.status_code == 401 and _error(r) == "unauthorized"
        assert r.headers["www-authenticate"].startswith("Bearer")
    token, key_id, _ = _key(redis_client)
    ApiKeyStore(redis_client).revoke(key_id)
    assert client.get("/api/v1/jobs/x", headers=_auth(token)).status_code == 401


def test_key_b_cannot_read_cancel_or_purge_key_a_job(client, redis_client):
    token_a, key_a, _ = _key(redis_client, name="a")
    token_b, _, _ = _key(redis_client, name="b")
    r = _submit(client, token_a)
    assert r.status_code == 202, r.text
    rid = r.json()["request_id"]
    assert JobStore(redis_client, 60).get(rid).owner == key_a
    for method, path in (("GET", f"/api/v1/jobs/{rid}"), ("GET", f"/api/v1/jobs/{rid}/result"),
                         ("POST", f"/api/v1/jobs/{rid}/cancel"), ("DELETE", f"/api/v1/jobs/{rid}")):
        other = client.request(method, path, headers=_auth(token_b))
        assert other.status_code == 404 and _error(other) == "job_not_found", (method, path)
        unknown = client.request(method, path.replace(rid, "no-such-job"), headers=_auth(token_b))
        assert unknown.json() == other.json()  # indistinguishable from a job that does not exist
    mine = client.get(f"/api/v1/jobs/{rid}", headers=_auth(token_a))
    assert mine.status_code == 200 and mine.json()["status"] == "queued"


def test_rate_limit_answers_429_with_retry_after(client, redis_client):
    token, _, _ = _key(redis_client, rate=2)
    assert client.get("/api/v1/jobs/x", headers=_auth(token)).status_code == 404
    assert client.get("/api/v1/jobs/x", headers=_auth(token)).status_code == 404
    r = client.get("/api/v1/jobs/x", headers=_auth(token))
    assert r.status_code == 429 and _error(r) == "rate_limited"
    assert 1 <= int(r.headers["retry-after"]) <= 60


def test_max_unfinished_jobs_per_key_and_slot_freed_by_cancel(client, redis_client):
    token, _, _ = _key(redis_client, queued=1)
    first = _submit(client, token)
    assert first.status_code == 202
    r = _submit(client, token)
    assert r.status_code == 429 and _error(r) == "too_many_queued" and "retry-after" in r.headers
    cancel = client.post(f"/api/v1/jobs/{first.json()['request_id']}/cancel", headers=_auth(token))
    assert cancel.status_code == 200
    assert _submit(client, token).status_code == 202


def test_idempotent_replay_and_mismatch(client, redis_client):
    token, _, _ = _key(redis_client)
    headers = {"Idempotency-Key": "order-1234"}
    first = _submit(client, token, headers=headers)
    again = _submit(client, token, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json()["request_id"] == first.json()["request_id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert redis_client.zcard("jobs:queued") == 1 and redis_client.llen("gpu") == 1  # one job, one task
    other_body = _submit(client, token, headers=headers, height_cm="180")
    assert other_body.status_code == 422 and _error(other_body) == "idempotency_mismatch"
    other_image = _submit(client, token, headers=headers, image=_png((10, 20, 30)))
    assert other_image.status_code == 422
    token_2, _, _ = _key(redis_client, name="other")
    assert _submit(client, token_2, headers=headers).json()["request_id"] != first.json()["request_id"]


def test_webhook_url_refused_at_submit_leaves_nothing(client, redis_client):
    token, _, _ = _key(redis_client)
    storage = client.app.state.storage
    for url in ("http://127.0.0.1:9/hook", "http://[::ffff:127.0.0.1]/", "http://169.254.169.254/latest",
                "http://10.0.0.1/", "http://[::1]:8080/", "ftp://example.com/"):
        r = _submit(client, token, webhook_url=url)
        assert r.status_code == 422 and _error(r) == "webhook_url_refused", url
        assert r.json()["error"]["field"] == "webhook_url"
    assert _objects(storage) == [] and redis_client.zcard("jobs:queued") == 0


def test_key_default_webhook_url_is_checked_too(client, redis_client):
    token, _, _ = _key(redis_client, webhook_url="http://127.0.0.1:9/hook")
    r = _submit(client, token)
    assert r.status_code == 422 and _error(r) == "webhook_url_refused"


def test_cancel_queued_job_never_runs_and_fires_webhook(gw_settings, redis_client):
    settings = gw_settings.model_copy(update={"webhook_allow_hosts": ["127.0.0.1"]})
    with TestClient(create_app(settings)) as client:
        token, _, _ = _key(redis_client)
        r = _submit(client, token, webhook_url="http://127.0.0.1:9/hook")
        rid = r.json()["request_id"]
        storage = client.app.state.storage
        assert len(_objects(storage)) == 1  # the upload
        canceled = client.post(f"/api/v1/jobs/{rid}/cancel", headers=_auth(token))
        assert canceled.status_code == 200
        body = canceled.json()
        assert body["status"] == "canceled" and body["error"]["code"] == "job_canceled"
        assert body["webhook_attempts"] == []
        assert _objects(storage) == []  # the face upload went with the job's end
        assert redis_client.llen("io") == 1  # the canceled webhook is enqueued once
        again = client.post(f"/api/v1/jobs/{rid}/cancel", headers=_auth(token))
        assert again.status_code == 409 and _error(again) == "job_already_finished"
        assert redis_client.llen("io") == 1

        class NeverRun:
            def generate(self, *a, **k):
                raise AssertionError("a canceled job reached the GPU")

        # the task is still in the broker (revoke needs a live worker); the task checks the record
        assert run_job(rid, NeverRun(), client.app.state.store, storage, deadline_s=60) is None
        assert client.app.state.store.get(rid).status is JobStatus.CANCELED


def test_cancel_running_job_stops_it_at_the_next_step(client, redis_client):
    token, _, _ = _key(redis_client)
    rid = _submit(client, token, num_images="1", width="64", height="64").json()["request_id"]
    store, storage = client.app.state.store, client.app.state.storage
    seen = []

    class CancelViaHttpAtStep2:
        def total_steps(self, params):
            return 4

        def generate(self, face_image, params, *, progress=None, pose_image=None):
            for step in range(1, 5):
                if step == 2:
                    assert client.post(f"/api/v1/jobs/{rid}/cancel", headers=_auth(token)).status_code == 200
                keep_going = progress(step, 4)
                seen.append((step, keep_going))
                if keep_going is False:
                    raise IdentityBodyError(ErrorCode.JOB_CANCELED, "The job was canceled.")
            raise AssertionError("generation did not stop")

    assert run_job(rid, CancelViaHttpAtStep2(), store, storage, deadline_s=60) is None
    assert seen == [(1, True), (2, False)]
    final = client.get(f"/api/v1/jobs/{rid}", headers=_auth(token)).json()
    assert final["status"] == "canceled" and final["started_at"] is not None
    finished = client.post(f"/api/v1/jobs/{rid}/cancel", headers=_auth(token))
    assert finished.status_code == 409


def test_delete_purges_upload_images_and_record(client, redis_client):
    token, _, _ = _key(redis_client)
    rid = _submit(client, token).json()["request_id"]
    store, storage = client.app.state.store, client.app.state.storage
    store.transition(rid, JobStatus.RUNNING, worker="w")
    storage.put_result(rid, 0, b"png")
    storage.put_result(rid, 1, b"png")
    assert len(_objects(storage)) == 3
    r = client.delete(f"/api/v1/jobs/{rid}", headers=_auth(token))
    assert r.status_code == 200 and r.json() == {"request_id": rid, "deleted": True}
    assert _objects(storage) == []
    assert store.get(rid) is None
    assert client.get(f"/api/v1/jobs/{rid}", headers=_auth(token)).status_code == 404


def test_auth_disabled_is_explicit_and_scopes_anonymous_jobs(settings, redis_client):
    assert settings.auth_disabled is True  # the test fixture's development setting
    with TestClient(create_app(settings)) as client:
        r = client.post(SUBMIT, data={"num_images": "1"}, files={"face_image": ("f.png", _png(), "image/png")})
        assert r.status_code == 202
        assert client.get(f"/api/v1/jobs/{r.json()['request_id']}").status_code == 200
        bad = client.get("/api/v1/jobs/x", headers={"Authorization": "Bearer idb_nope"})
        assert bad.status_code == 401  # a wrong key is still wrong


def test_metrics_endpoint(client, redis_client):
    token, _, _ = _key(redis_client)
    rid = _submit(client, token).json()["request_id"]
    client.get(f"/api/v1/jobs/{rid}", headers=_auth(token))
    assert 'idbody_jobs{status="queued"} 1.0' in client.get("/metrics").text
    JobStore(redis_client, 600).transition(rid, JobStatus.RUNNING, worker="gpu0")  # what a worker writes
    running = client.get("/metrics").text
    assert 'idbody_jobs{status="queued"} 0.0' in running and 'idbody_jobs{status="running"} 1.0' in running
    client.post(f"/api/v1/jobs/{rid}/cancel", headers=_auth(token))
    text = client.get("/metrics").text
    assert 'idbody_jobs{status="running"} 0.0' in text
    assert 'idbody_http_requests_total{method="GET",route="/api/v1/jobs/{request_id}",status="200"} 1.0' in text
    assert 'route="/api/v1/generate-identity-body",status="202"' in text
    assert "idbody_http_request_duration_seconds_bucket" in text
    assert 'idbody_jobs{status="queued"} 0.0' in text
    assert 'idbody_jobs_finished_total{status="canceled"} 1.0' in text
    assert rid not in text
