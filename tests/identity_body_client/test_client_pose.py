"""``Client.submit(..., pose_image=...)`` against the real gateway in-process on real Valkey and
SeaweedFS: the pose photo travels as its own file field, its errors name it, and the result says
what set the pose."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from identity_body_client import ApiError, Client
from shared.jobs.record import JobResult
from shared.jobs.record import JobStatus as ServerStatus
from tests.image_samples import photo

pytestmark = pytest.mark.integration


def test_a_pose_photo_is_sent_stored_and_reported(settings, redis_client, tmp_path):
    pose = tmp_path / "dancer.png"
    pose.write_bytes(photo(200, 300, fmt="PNG"))
    http = TestClient(create_app(settings))
    client = Client("http://testserver", http=http)
    with http:
        job = client.submit(photo(), pose_image=pose, num_images=1)
        store = http.app.state.store
        record = store.get(job.request_id)
        assert record.pose_upload_key == f"{job.request_id}/pose.jpg"
        assert http.app.state.storage.get_upload(record.pose_upload_key)[:3] == b"\xff\xd8\xff"
        store.transition(job.request_id, ServerStatus.RUNNING, worker="w")
        store.transition(job.request_id, ServerStatus.SUCCEEDED, result=JobResult(pose_source="photo"))
        assert client.result(job).pose_source == "photo"
        plain = client.submit(photo(), num_images=1)
        assert store.get(plain.request_id).pose_upload_key is None
        with pytest.raises(ApiError) as refused:
            client.submit(photo(), pose_image=b"not a photo", num_images=1)
    assert refused.value.code == "unsupported_media_type" and refused.value.field == "pose_image"
