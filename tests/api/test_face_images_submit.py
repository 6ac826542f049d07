"""Several face photos in one submit (the field ``face_image`` repeated) over real HTTP with real
Valkey and SeaweedFS: each is checked and stored under the job's prefix, an error names the photo,
more than five are refused, and the job's end and purge remove every one of them."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from api.submit import form_files
from shared.face_images import MAX_FACE_IMAGES
from shared.jobs.record import JobStatus
from shared.jobs.retention import UPLOADS_DUE, Retention
from tests import image_samples as samples
from tests.api.gateway import SEED_FIELDS, SUBMIT, nothing_stored

pytestmark = pytest.mark.integration


def submit_photos(gateway, photos: list[bytes], headers=None):
    files = [("face_image", (f"photo{i}.jpg", data, "image/jpeg")) for i, data in enumerate(photos)]
    return gateway.client.post(SUBMIT, data=SEED_FIELDS, files=files, headers=headers)


def uploads(gateway, rid: str) -> list[str]:
    listed = gateway.storage.client.list_objects_v2(Bucket=gateway.storage.uploads_bucket, Prefix=f"{rid}/")
    return sorted(o["Key"] for o in listed.get("Contents", []))


def test_each_photo_is_stored_under_the_jobs_prefix_in_order(gateway):
    photos = [samples.photo(160, 120), samples.photo(200, 100, fmt="PNG"), samples.photo(96, 128)]
    resp = submit_photos(gateway, photos)
    assert resp.status_code == 202, resp.text
    rid = resp.json()["request_id"]
    record = gateway.store.get(rid)
    assert record.upload_keys == [f"{rid}/face.jpg", f"{rid}/face_2.jpg", f"{rid}/face_3.jpg"]
    assert record.upload_key == f"{rid}/face.jpg" and uploads(gateway, rid) == sorted(record.upload_keys)
    sizes = [Image.open(io.BytesIO(gateway.storage.get_upload(k))).size for k in record.upload_keys]
    assert sizes == [(160, 120), (200, 100), (96, 128)]  # each checked and stored as a JPEG, in order
    # each is tracked for the retention sweep, should the job never report its end
    tracked = {m.decode() for m in gateway.store.client.zrange(UPLOADS_DUE, 0, -1)}
    assert tracked == set(record.upload_keys)


def test_one_photo_keeps_its_single_key(gateway):
    rid = submit_photos(gateway, [samples.photo()]).json()["request_id"]
    record = gateway.store.get(rid)
    assert record.upload_keys == [f"{rid}/face.jpg"] == record.face_upload_keys


def test_more_than_five_photos_are_refused_with_their_own_code(gateway, redis_client):
    resp = submit_photos(gateway, [samples.photo()] * (MAX_FACE_IMAGES + 1))
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["code"] == "too_many_face_images" and error["field"] == "face_image"
    assert "6 face photos" in error["message"] and "1 to 5" in error["message"]
    nothing_stored(gateway, redis_client)
    assert submit_photos(gateway, [samples.photo()] * (2 * MAX_FACE_IMAGES)).json()["error"]["code"] == (
        "too_many_face_images")
    flood = submit_photos(gateway, [samples.photo()] * (2 * form_files() + 1))  # the parser's own bound
    assert flood.status_code == 422 and "multipart" in flood.json()["error"]["message"]
    nothing_stored(gateway, redis_client)
    assert submit_photos(gateway, [samples.photo()] * MAX_FACE_IMAGES).status_code == 202


@pytest.mark.parametrize("bad,status,code", [
    (samples.corrupt_jpeg, 422, "image_decode_failed"),
    (lambda: samples.animated("GIF"), 415, "unsupported_media_type"),
    (lambda: samples.photo(200, 40), 422, "image_too_small"),
    (lambda: samples.photo(1200, 1200, fmt="PNG") + b"\0" * (600 * 1024), 413, "file_too_large"),
])
def test_a_bad_second_photo_is_named_and_nothing_is_stored(gateway, redis_client, bad, status, code):
    resp = submit_photos(gateway, [samples.photo(), bad(), samples.photo()])
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["code"] == code and error["field"] == "face_image[2]"
    assert error["message"].startswith("Photo 2 of 3: ")
    nothing_stored(gateway, redis_client)


def test_idempotent_replay_needs_the_same_photos(gateway):
    photos = [samples.photo(160, 120), samples.photo(128, 128)]
    first = submit_photos(gateway, photos, headers={"Idempotency-Key": "two-photos"})
    again = submit_photos(gateway, photos, headers={"Idempotency-Key": "two-photos"})
    assert again.json()["request_id"] == first.json()["request_id"]
    other = submit_photos(gateway, [photos[0], samples.photo(96, 96)], headers={"Idempotency-Key": "two-photos"})
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_mismatch"


def test_the_jobs_end_and_purge_remove_every_photo(gateway, gateway_settings):
    retention = Retention.from_settings(gateway_settings, gateway.storage, gateway.store)
    ended = submit_photos(gateway, [samples.photo()] * 3).json()["request_id"]
    record = gateway.store.transition(ended, JobStatus.CANCELED)
    retention.job_finished(record)
    assert uploads(gateway, ended) == []
    purged = submit_photos(gateway, [samples.photo()] * 2).json()["request_id"]
    assert len(uploads(gateway, purged)) == 2
    assert gateway.client.delete(f"/api/v1/jobs/{purged}").status_code == 200
    assert uploads(gateway, purged) == []


def test_info_and_openapi_say_how_many_photos_a_job_takes(gateway):
    assert gateway.client.get("/api/v1/info").json()["max_face_images"] == MAX_FACE_IMAGES
    spec = gateway.client.get("/openapi.json").json()
    body = spec["paths"][SUBMIT]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    photos = body["properties"]["face_image"]
    assert photos["type"] == "array" and photos["items"] == {"type": "string", "format": "binary"}
    assert (photos["minItems"], photos["maxItems"]) == (1, MAX_FACE_IMAGES) and "face_image[2]" in photos["description"]
    refused = spec["paths"][SUBMIT]["post"]["responses"]["422"]["content"]["application/json"]["examples"]
    assert "too_many_face_images" in refused
