"""Storage on a real SeaweedFS S3 server: round trips, presigned URLs, private uploads."""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid
from urllib.parse import urlsplit

import pytest

from shared.storage import Storage

pytestmark = pytest.mark.integration


@pytest.fixture
def storage(settings) -> Storage:
    s = Storage.from_settings(settings)
    s.ensure_buckets()
    return s


def _http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_ensure_buckets_is_idempotent(storage):
    storage.ensure_buckets()
    names = {b["Name"] for b in storage.client.list_buckets()["Buckets"]}
    assert {storage.uploads_bucket, storage.results_bucket} <= names
    assert storage.ping() is True


def test_upload_round_trip_and_delete(storage):
    rid = uuid.uuid4().hex
    key = storage.put_upload(rid, b"\x89PNG fake", "image/png")
    assert rid in key
    assert storage.get_upload(key) == b"\x89PNG fake"
    head = storage.client.head_object(Bucket=storage.uploads_bucket, Key=key)
    assert head["ContentType"] == "image/png"
    storage.delete_upload(key)
    listed = storage.client.list_objects_v2(Bucket=storage.uploads_bucket, Prefix=rid)
    assert listed.get("KeyCount", 0) == 0


def test_uploads_are_not_publicly_readable(storage, settings):
    rid = uuid.uuid4().hex
    key = storage.put_upload(rid, b"face bytes", "image/png")
    status, body = _http_get(f"{settings.s3_endpoint_url}/{storage.uploads_bucket}/{key}")
    assert status in (401, 403)
    assert b"face bytes" not in body


def test_presigned_result_url_downloads_bytes(storage):
    rid = uuid.uuid4().hex
    png = b"\x89PNG\r\n\x1a\n result 0"
    key = storage.put_result(rid, 0, png)
    url = storage.result_url(key)
    assert "X-Amz-Signature=" in url and f"X-Amz-Expires={storage.presign_expiry_s}" in url
    assert _http_get(url) == (200, png)
    # the same object without a signature is refused: results are private too
    status, _ = _http_get(url.split("?", 1)[0])
    assert status in (401, 403)


def test_presign_endpoint_names_the_address_clients_use(settings):
    """Compose's services reach S3 as http://s3:8333 while a browser on the host uses
    127.0.0.1:8333: the URL must name the client's address and its signature must hold there."""
    port = urlsplit(settings.s3_endpoint_url).port
    as_client_sees_it = f"http://localhost:{port}"
    s = Storage.from_settings(settings.model_copy(update={"s3_presign_endpoint_url": as_client_sees_it}))
    s.ensure_buckets()
    key = s.put_result(uuid.uuid4().hex, 0, b"\x89PNG\r\n\x1a\n other host")
    url = s.result_url(key)
    assert url.startswith(f"{as_client_sees_it}/{s.results_bucket}/{key}?")
    assert _http_get(url) == (200, b"\x89PNG\r\n\x1a\n other host")
    # the object itself was written through the services' endpoint, not the presign one
    assert s.client.meta.endpoint_url == settings.s3_endpoint_url
    # without the setting the URL names the services' endpoint
    assert Storage.from_settings(settings).result_url(key).startswith(f"{settings.s3_endpoint_url}/")


def test_delete_results_removes_every_image(storage):
    rid, other = uuid.uuid4().hex, uuid.uuid4().hex
    for i in range(3):
        storage.put_result(rid, i, b"png %d" % i)
    storage.put_result(other, 0, b"keep")
    assert storage.delete_results(rid) == 3
    assert storage.delete_results(rid) == 0
    left = storage.client.list_objects_v2(Bucket=storage.results_bucket)
    assert [o["Key"] for o in left.get("Contents", [])] == [f"{other}/identity_body_0.png"]


def test_public_base_url_form(settings):
    s = Storage.from_settings(settings.model_copy(update={"public_results_base_url": "https://cdn.example.test/r/"}))
    assert s.result_url("abc/identity_body_1.png") == "https://cdn.example.test/r/abc/identity_body_1.png"


def test_ping_false_when_endpoint_down(settings):
    from idbody.stack.servers import free_port

    down = settings.model_copy(update={"s3_endpoint_url": f"http://127.0.0.1:{free_port()}"})
    s = Storage.from_settings(down)
    s.client.meta.config.retries = {"max_attempts": 1}
    assert s.ping() is False
