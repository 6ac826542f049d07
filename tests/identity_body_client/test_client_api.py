"""``identity_body_client.Client`` against the real gateway in-process (FastAPI TestClient as its
httpx client) on real Valkey and SeaweedFS, no workers: the paths a job's outcome does not decide —
backoff polling when the server will not hold a request, the wait deadline, errors, the job list."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.main import create_app
from identity_body_client import ApiError, Client, JobStatus, Result, WaitTimeout
from shared.jobs.record import JobStatus as ServerStatus

pytestmark = pytest.mark.integration


def _photo() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (128, 128), (200, 170, 150)).save(buf, format="PNG")
    return buf.getvalue()


def _client(settings, **update):
    http = TestClient(create_app(settings.model_copy(update=update)))
    return http, Client("http://testserver", http=http)


def test_wait_polls_with_backoff_when_the_server_does_not_hold_requests(settings, redis_client):
    http, client = _client(settings, max_wait_s=0)
    with http:
        job = client.submit(_photo(), num_images=1)
        polls = []

        def fail_on_second_poll(response):
            if response.request.method == "GET" and response.request.url.path.endswith(job.request_id):
                polls.append(response.headers.get("preference-applied"))
                if len(polls) == 2:
                    http.app.state.store.transition(job.request_id, ServerStatus.FAILED,
                                                    error={"code": "no_face_detected", "message": "No face."})

        http.event_hooks["response"].append(fail_on_second_poll)
        result = client.wait(job, timeout=60)
    assert polls == [None, None, None]  # never held: plain polls until the third saw the end
    assert not result.success and result.error.code == "no_face_detected"


def test_wait_gives_up_at_its_deadline_and_errors_carry_their_code(settings, redis_client):
    http, client = _client(settings, max_wait_s=1)
    with http:
        job = client.submit(_photo(), num_images=1)
        with pytest.raises(WaitTimeout) as late:
            client.wait(job, timeout=1.5)
        assert late.value.job.status is JobStatus.QUEUED and late.value.job.queue_position == 1
        with pytest.raises(ApiError) as unfinished:
            client.result(job)
        assert unfinished.value.code == "job_not_finished" and unfinished.value.status_code == 409
        with pytest.raises(ApiError) as unknown:
            client.status("no-such-job")
        assert unknown.value.code == "job_not_found" and unknown.value.field == "request_id"


def test_jobs_follows_the_cursor_across_pages(settings, redis_client):
    http, client = _client(settings)
    with http:
        ids = [client.submit(_photo(), num_images=1, seed=i).request_id for i in range(3)]
        listed = [job.request_id for job in client.jobs(page_size=2)]
    assert listed == ids[::-1]


def test_submit_takes_one_photo_or_a_list_of_them(settings, redis_client, tmp_path):
    http, client = _client(settings)
    second = tmp_path / "side.png"
    second.write_bytes(_photo())
    with http:
        one = client.submit(_photo(), num_images=1)
        several = client.submit([_photo(), second, io.BytesIO(_photo())], num_images=1)
        store = http.app.state.store
        assert len(store.get(one.request_id).upload_keys) == 1
        assert store.get(several.request_id).upload_keys == [
            f"{several.request_id}/face.jpg", f"{several.request_id}/face_2.jpg", f"{several.request_id}/face_3.jpg"]
        with pytest.raises(ApiError) as refused:
            client.submit([_photo()] * 6)
    assert refused.value.code == "too_many_face_images" and refused.value.field == "face_image"


def test_the_result_says_how_many_photos_made_it():
    result = Result.from_json({"success": True, "request_id": "r", "count": 0, "face_image_count": 2,
                               "keypoints_face_image": 1})
    assert (result.face_image_count, result.keypoints_face_image) == (2, 1)
    assert Result.from_json({"success": False, "request_id": "r", "count": 0}).face_image_count is None
