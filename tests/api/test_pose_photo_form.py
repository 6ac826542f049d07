"""The pose photo at the gateway, over real HTTP with real Valkey and SeaweedFS: ``pose_image``
passes the face photo's upload checks with errors naming it, is stored beside the face under the
job's prefix and deleted with the job; ``/api/v1/info`` says what a pose photo does."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from shared.access.idempotency import request_fingerprint
from tests import image_samples as samples
from tests.api.gateway import SEED_FIELDS, SUBMIT, Gateway, nothing_stored

pytestmark = pytest.mark.integration


def submit_with_pose(gw: Gateway, pose: bytes | list[bytes], fields=None):
    poses = pose if isinstance(pose, list) else [pose]
    files = [("face_image", ("me.jpg", samples.photo(), "image/jpeg")),
             *[("pose_image", ("pose.jpg", data, "image/jpeg")) for data in poses]]
    return gw.client.post(SUBMIT, data=SEED_FIELDS if fields is None else fields, files=files)


def test_a_pose_photo_is_stored_beside_the_face_and_deleted_with_the_job(gateway: Gateway):
    pose = samples.photo(200, 300, fmt="PNG")
    resp = submit_with_pose(gateway, pose)
    assert resp.status_code == 202, resp.text
    rid = resp.json()["request_id"]
    record = gateway.store.get(rid)
    assert record.upload_key == f"{rid}/face.jpg" and record.pose_upload_key == f"{rid}/pose.jpg"
    assert record.upload_keys == [f"{rid}/face.jpg", f"{rid}/pose.jpg"] and record.face_upload_keys == [record.upload_key]
    stored = Image.open(io.BytesIO(gateway.storage.get_upload(record.pose_upload_key)))
    assert stored.format == "JPEG" and stored.size == (200, 300)   # checked and re-encoded like the face
    assert gateway.client.delete(f"/api/v1/jobs/{rid}").status_code == 200
    listed = gateway.storage.client.list_objects_v2(Bucket=gateway.storage.uploads_bucket, Prefix=f"{rid}/")
    assert listed.get("KeyCount", 0) == 0


def test_a_job_without_a_pose_photo_stores_none(gateway: Gateway):
    resp = gateway.client.post(SUBMIT, data=SEED_FIELDS, files={"face_image": ("me.jpg", samples.photo(), "image/jpeg")})
    assert resp.status_code == 202
    assert gateway.store.get(resp.json()["request_id"]).pose_upload_key is None


@pytest.mark.parametrize(("data", "status", "code"), [
    (samples.animated("WEBP"), 422, "animated_image"),
    (b"this is not an image at all", 415, "unsupported_media_type"),
    (samples.photo(40, 40), 422, "image_too_small"),
    (samples.bomb_png(5000, 5000), 413, "image_too_large"),
    (b"\xff\xd8\xff" + b"x" * (600 * 1024), 413, "file_too_large"),
], ids=["animated", "not-an-image", "too-small", "too-many-pixels", "too-many-bytes"])
def test_a_bad_pose_photo_is_refused_naming_its_field_and_nothing_is_kept(gateway, redis_client, data, status, code):
    resp = submit_with_pose(gateway, data)
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["code"] == code and resp.json()["error"]["field"] == "pose_image"
    nothing_stored(gateway, redis_client)


def test_one_pose_photo_at_most_and_only_as_a_file(gateway, redis_client):
    two = submit_with_pose(gateway, [samples.photo(), samples.photo()])
    assert two.status_code == 422 and two.json()["error"]["field"] == "pose_image"
    as_text = gateway.client.post(SUBMIT, data={**SEED_FIELDS, "pose_image": "dancer.jpg"},
                                  files={"face_image": ("me.jpg", samples.photo(), "image/jpeg")})
    assert as_text.status_code == 422 and "pose_image=@photo.jpg" in as_text.json()["error"]["message"]
    other = gateway.client.post(SUBMIT, data=SEED_FIELDS, files=[
        ("face_image", ("me.jpg", samples.photo(), "image/jpeg")), ("body_image", ("b.jpg", samples.photo(), "image/jpeg"))])
    assert other.status_code == 422 and other.json()["error"]["field"] == "body_image"
    nothing_stored(gateway, redis_client)


def test_the_pose_photo_is_part_of_an_idempotent_request():
    fields = {"gender": "female"}
    assert request_fingerprint(fields, b"face") == request_fingerprint(fields, b"face", None)
    assert request_fingerprint(fields, b"face", b"pose-a") != request_fingerprint(fields, b"face", b"pose-b")
    assert request_fingerprint(fields, b"face", b"pose-a") != request_fingerprint(fields, b"face")


def test_info_says_pose_photos_are_accepted_and_whether_a_pose_controlnet_is_loaded(gateway: Gateway):
    alone = gateway.client.get("/api/v1/info").json()["pose_photos"]
    assert alone["accepted"] is True and alone["readers"] == 0 and alone["pose_controlnet"] is None
    assert "pose_image" in alone["description"]
    gateway.store.heartbeat_worker("gpu0@test", {"profile": "tiny", "pipeline_loaded": True, "pose_photos": True,
                                                 "pose_controlnet": False}, 30)
    info = gateway.client.get("/api/v1/info").json()["pose_photos"]
    assert info["readers"] == 1 and info["pose_controlnet"] is False
    gateway.store.heartbeat_worker("gpu1@test", {"profile": "tiny", "pipeline_loaded": True, "pose_photos": True,
                                                 "pose_controlnet": True}, 30)
    mixed = gateway.client.get("/api/v1/info").json()["pose_photos"]
    assert mixed["readers"] == 2 and mixed["pose_controlnet"] is None   # the workers differ


def test_openapi_documents_the_pose_photo_with_an_example(gateway: Gateway):
    body = gateway.client.get("/openapi.json").json()["paths"][SUBMIT]["post"]["requestBody"]["content"]
    form = body["multipart/form-data"]
    assert form["schema"]["properties"]["pose_image"]["format"] == "binary"
    assert "pose_image" in form["examples"]["pose_photo"]["value"]
    result = gateway.client.get("/openapi.json").json()["components"]["schemas"]["JobResultResponse"]
    assert "pose_source" in result["properties"]
