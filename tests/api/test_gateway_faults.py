"""The gateway's answers to broken dependencies and malformed input, in-process on real Valkey and
SeaweedFS: 503 with Retry-After on every route when Valkey is unreachable, 422 with a code for
malformed webhook URLs, control characters and invalid UTF-8, 405 naming every method, and the
keyless caller of the auth-off stack kept away from keyed jobs."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.main import create_app
from idbody.stack.servers import free_port
from shared.access.api_keys import ApiKeyStore

pytestmark = pytest.mark.integration

SUBMIT = "/api/v1/generate-identity-body"


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (128, 128), (200, 170, 150)).save(buf, format="JPEG")
    return buf.getvalue()


def _submit(client: TestClient, headers: dict | None = None, **fields: str):
    return client.post(SUBMIT, headers=headers or {}, data={"num_images": "1", **fields},
                       files={"face_image": ("face.jpg", _jpeg(), "image/jpeg")})


@pytest.fixture
def client(settings, redis_client):
    with TestClient(create_app(settings)) as c:  # auth off: the local stack
        yield c


def test_keyless_caller_cannot_read_or_cancel_keyed_jobs_with_auth_off(client, redis_client):
    token = ApiKeyStore(redis_client).create("k", rate_limit_per_min=100, max_queued_jobs=10).token
    keyed = _submit(client, headers={"Authorization": f"Bearer {token}"}).json()["request_id"]
    for method, path in (("GET", f"/api/v1/jobs/{keyed}"), ("GET", f"/api/v1/jobs/{keyed}/result"),
                         ("POST", f"/api/v1/jobs/{keyed}/cancel"), ("DELETE", f"/api/v1/jobs/{keyed}")):
        r = client.request(method, path)
        assert r.status_code == 404 and r.json()["error"]["code"] == "job_not_found", (method, path)
    assert client.get(f"/api/v1/jobs/{keyed}", headers={"Authorization": f"Bearer {token}"}).json()["status"] == "queued"
    keyless = _submit(client).json()["request_id"]
    assert client.get(f"/api/v1/jobs/{keyless}").status_code == 200


def test_every_route_answers_503_with_retry_after_when_valkey_is_down(settings):
    dead = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0", "auth_disabled": False})
    auth = {"Authorization": "Bearer idb_whatever"}
    with TestClient(create_app(dead)) as client:
        answers = [
            _submit(client, headers=auth),
            client.get("/api/v1/jobs/r1", headers=auth),
            client.get("/api/v1/jobs/r1/result", headers=auth),
            client.post("/api/v1/jobs/r1/cancel", headers=auth),
            client.delete("/api/v1/jobs/r1", headers=auth),
        ]
    for r in answers:
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "service_unavailable" and int(r.headers["Retry-After"]) > 0


@pytest.mark.parametrize("url", ["http://[::1", "http://[x]/", "https://[127.0.0.1]/", "http://a]b/"])
def test_malformed_webhook_url_is_422_with_a_code(client, url):
    r = _submit(client, webhook_url=url)
    assert r.status_code == 422 and r.json()["error"] == {
        "code": "webhook_url_refused", "message": r.json()["error"]["message"], "field": "webhook_url"}


def test_control_characters_and_invalid_utf8_in_free_text_are_refused(client):
    r = _submit(client, clothing="red\x00dress")
    assert r.status_code == 422 and r.json()["error"]["field"] == "clothing"
    body = (b"--b\r\nContent-Disposition: form-data; name=\"clothing\"\r\n\r\nred \xff\xfe dress\r\n"
            b"--b\r\nContent-Disposition: form-data; name=\"face_image\"; filename=\"f.jpg\"\r\n"
            b"Content-Type: image/jpeg\r\n\r\n" + _jpeg() + b"\r\n--b--\r\n")
    r = client.post(SUBMIT, content=body, headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code == 422 and "UTF-8" in r.json()["error"]["message"]
    assert _submit(client, clothing="robe de soirée, 着物").status_code == 202  # real UTF-8 is fine


def test_malformed_multipart_is_422_not_400(client):
    r = client.post(SUBMIT, content=b"--nope\r\ngarbage", headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code == 422 and r.json()["error"]["code"] in ("invalid_parameter", "missing_field")


def test_405_allow_names_every_method_of_the_path(client):
    r = client.put("/api/v1/jobs/r1")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    assert {m.strip() for m in r.headers["Allow"].split(",")} >= {"GET", "DELETE"}
