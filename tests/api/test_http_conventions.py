"""The API's HTTP conventions (issue 12, item 5) through the real FastAPI app on real Valkey and
SeaweedFS: bearer security scheme, enums, operation ids, 202 + Location + Retry-After, bare
``Prefer: wait``, 409 for a concurrent Idempotency-Key, the job list, CORS, RateLimit-* headers
and an empty Authorization header with auth off."""

from __future__ import annotations

import io
import threading

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.main import create_app
from idbody.stack.polling import until
from shared.access.api_keys import ApiKeyStore
from shared.access.idempotency import IdempotencyStore, request_fingerprint
from shared.errors import ErrorCode
from shared.jobs.record import JobStatus

pytestmark = pytest.mark.integration

SUBMIT = "/api/v1/generate-identity-body"
FIELDS = {"body_type": "athletic", "num_images": "1"}


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (128, 128), (200, 170, 150)).save(buf, format="PNG")
    return buf.getvalue()


PHOTO = _png()


def _submit(client, headers=None, fields=None):
    return client.post(SUBMIT, headers=headers or {}, data=fields or FIELDS,
                       files={"face_image": ("face.png", PHOTO, "image/png")})


def _client(settings, **update):
    return TestClient(create_app(settings.model_copy(update=update)))


@pytest.fixture
def open_client(settings, redis_client):
    with _client(settings, max_wait_s=30) as c:
        yield c


@pytest.fixture
def keyed_client(settings, redis_client):
    with _client(settings, auth_disabled=False) as c:
        yield c


def _token(redis_client, name="k", rate=100) -> str:
    return ApiKeyStore(redis_client).create(name, rate_limit_per_min=rate, max_queued_jobs=50).token


# --- OpenAPI ------------------------------------------------------------------------------------


def test_openapi_declares_bearer_auth_enums_and_readable_operation_ids(open_client):
    spec = open_client.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert [s["scheme"] for s in schemes.values()] == ["bearer"]  # /docs shows "Authorize"
    scheme_name = next(iter(schemes))
    job_ops = [op for path, ops in spec["paths"].items()
               if path.startswith(("/api/v1/jobs", SUBMIT)) for op in ops.values()]
    assert job_ops and all({scheme_name: []} in op.get("security", []) for op in job_ops)
    assert "security" not in spec["paths"]["/healthz"]["get"]
    schemas = spec["components"]["schemas"]
    assert set(schemas["JobStatus"]["enum"]) == {s.value for s in JobStatus}
    assert set(schemas["ErrorCode"]["enum"]) == {c.value for c in ErrorCode}
    for model in ("SubmitResponse", "JobStatusResponse"):
        assert schemas[model]["properties"]["status"]["$ref"].endswith("/JobStatus")
    assert schemas["ErrorBody"]["properties"]["code"]["$ref"].endswith("/ErrorCode")
    ids = [op["operationId"] for ops in spec["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    assert {"generate_identity_body", "job_status", "job_result", "cancel_job", "list_jobs"} <= set(ids)
    accepted = spec["paths"][SUBMIT]["post"]["responses"]["202"]
    assert {"Location", "Retry-After"} <= set(accepted["headers"])


# --- 202, Prefer: wait ----------------------------------------------------------------------------


def test_submit_answers_202_with_location_and_retry_after(open_client):
    resp = _submit(open_client)
    assert resp.status_code == 202
    assert resp.headers["Location"] == resp.json()["status_url"]
    assert int(resp.headers["Retry-After"]) >= 1
    status = open_client.get(resp.headers["Location"])
    assert status.status_code == 200 and status.json()["status"] == "queued"
    assert int(status.headers["Retry-After"]) >= 1


def _when_waiting(redis_client, rid: str) -> None:
    until(lambda: redis_client.pubsub_numsub(f"job-finished:{rid}")[0][1], 20, "the gateway to wait on the job")


def test_bare_prefer_wait_is_honoured_on_submit(open_client, redis_client):
    box = {}
    t = threading.Thread(target=lambda: box.update(resp=_submit(open_client, headers={"Prefer": "wait"})))
    t.start()
    rid = until(lambda: [k.decode().split(":", 1)[1] for k in redis_client.scan_iter("job:*")], 20, "a job")[0]
    _when_waiting(redis_client, rid)
    open_client.app.state.store.transition(rid, JobStatus.FAILED, error={"code": "no_face_detected", "message": "No face."})
    t.join(30)
    resp = box["resp"]
    assert resp.status_code == 200 and resp.headers["Preference-Applied"] == "wait=30"  # clamped to max_wait_s
    assert resp.json()["error"]["code"] == "no_face_detected"


def test_status_long_polls_with_prefer_wait(open_client, redis_client):
    rid = _submit(open_client).json()["request_id"]
    box = {}
    url = f"/api/v1/jobs/{rid}"
    t = threading.Thread(target=lambda: box.update(resp=open_client.get(url, headers={"Prefer": "wait=20"})))
    t.start()
    _when_waiting(redis_client, rid)
    open_client.app.state.store.transition(rid, JobStatus.CANCELED, error={"code": "job_canceled", "message": "x"})
    t.join(30)
    resp = box["resp"]
    assert resp.headers["Preference-Applied"] == "wait=20" and resp.json()["status"] == "canceled"
    assert "Retry-After" not in resp.headers  # finished: nothing to poll for


# --- Idempotency-Key ----------------------------------------------------------------------------


def test_concurrent_duplicate_idempotency_key_answers_409(open_client, redis_client):
    # a twin request holds the key but has not written its job yet: exactly what a concurrent duplicate sees
    fingerprint = request_fingerprint(dict(FIELDS), PHOTO)
    assert IdempotencyStore(redis_client, 3600).claim(None, "key-1", fingerprint, "twin-still-writing") is None
    resp = _submit(open_client, headers={"Idempotency-Key": "key-1"})
    assert resp.status_code == 409, resp.text
    assert resp.json()["error"]["code"] == "idempotency_in_progress"
    assert int(resp.headers["Retry-After"]) >= 1


# --- the job list -----------------------------------------------------------------------------------


def test_job_list_is_the_callers_newest_first_and_cursor_paginated(keyed_client, redis_client):
    mine, other = _token(redis_client, "mine"), _token(redis_client, "other")
    auth = {"Authorization": f"Bearer {mine}"}
    submitted = [_submit(keyed_client, headers=auth).json()["request_id"] for _ in range(5)]
    _submit(keyed_client, headers={"Authorization": f"Bearer {other}"})
    deleted = submitted.pop(2)
    assert keyed_client.delete(f"/api/v1/jobs/{deleted}", headers=auth).status_code == 200

    seen, cursor = [], None
    for _ in range(5):
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = keyed_client.get("/api/v1/jobs", headers=auth, params=params)
        assert page.status_code == 200, page.text
        assert len(page.json()["jobs"]) <= 2
        seen += [job["request_id"] for job in page.json()["jobs"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(submitted))
    assert all(job["status"] == "queued" for job in page.json()["jobs"])
    bad = keyed_client.get("/api/v1/jobs", headers=auth, params={"cursor": "not-a-cursor"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "cursor"
    assert keyed_client.get("/api/v1/jobs").status_code == 401


# --- CORS -----------------------------------------------------------------------------------------


def _preflight(client):
    return client.options(SUBMIT, headers={"Origin": "https://app.example.com",
                                           "Access-Control-Request-Method": "POST",
                                           "Access-Control-Request-Headers": "authorization,prefer"})


def test_cors_is_off_by_default_and_follows_the_setting(settings, redis_client):
    with _client(settings) as off:
        assert "access-control-allow-origin" not in _preflight(off).headers
    with _client(settings, cors_origins=["https://app.example.com"]) as on:
        pre = _preflight(on)
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "https://app.example.com"
        resp = _submit(on, headers={"Origin": "https://app.example.com"})
        assert "location" in resp.headers["access-control-expose-headers"].lower()
        other = on.get("/healthz", headers={"Origin": "https://evil.example.net"})
        assert "access-control-allow-origin" not in other.headers


# --- RateLimit-* and Authorization ------------------------------------------------------------------


def test_ratelimit_headers_count_down_and_come_with_the_429(keyed_client, redis_client):
    auth = {"Authorization": f"Bearer {_token(redis_client, rate=3)}"}
    first = keyed_client.get("/api/v1/jobs", headers=auth)
    second = _submit(keyed_client, headers=auth)
    assert first.headers["RateLimit-Limit"] == "3" and first.headers["RateLimit-Remaining"] == "2"
    assert second.headers["RateLimit-Remaining"] == "1" and 0 < int(second.headers["RateLimit-Reset"]) <= 60
    keyed_client.get("/api/v1/jobs", headers=auth)
    refused = keyed_client.get("/api/v1/jobs", headers=auth)
    assert refused.status_code == 429 and refused.headers["RateLimit-Remaining"] == "0"
    assert int(refused.headers["Retry-After"]) >= 1
    assert "RateLimit-Limit" not in keyed_client.get("/healthz").headers


def test_empty_authorization_header_counts_as_none_only_when_auth_is_off(open_client, keyed_client):
    empty = {"Authorization": "Bearer "}  # what `-H "Authorization: Bearer $IDBODY_KEY"` sends with no key
    assert _submit(open_client, headers=empty).status_code == 202
    assert _submit(open_client, headers={"Authorization": ""}).status_code == 202
    refused = _submit(keyed_client, headers=empty)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
