"""Several face photos of one person through the real stack (Valkey, SeaweedFS, the gateway and a
Celery worker on the tiny profile, dlib's real recognizer, real HTTP): two photos of one person
make other images than one of them alone, photos of two people fail with faces_differ, a photo
without a face is named, more than five photos are refused at the door, and every photo is
deleted when the job ends."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from idbody.stack.polling import until
from idbody.stack.service import running_stack, stack_settings
from shared.storage import Storage
from tests.e2e.finished_job import SUBMIT, job_end
from tests.face_photos import jpeg, stranger, tom, tom_again
from tests.image_samples import uniform_jpeg

pytestmark = pytest.mark.integration

SMALL = {"num_images": "1", "width": "64", "height": "64", "num_inference_steps": "2", "seed": "7"}


@pytest.fixture(scope="module")
def service(valkey, s3_server, tmp_path_factory):
    settings = stack_settings(valkey, s3_server, 14, "photos", model_profile="tiny", auth_disabled=True,
                              device="cpu", tiny_model_dir=tmp_path_factory.getbasetemp() / "tiny-models")
    with running_stack(settings, tmp_path_factory.mktemp("photos-logs"), io_worker=None) as stack:
        yield stack


def submit(service, photos: list[bytes]) -> httpx.Response:
    files = [("face_image", (f"photo{i}.jpg", data, "image/jpeg")) for i, data in enumerate(photos)]
    return httpx.post(service.base_url + SUBMIT, data=SMALL, files=files, timeout=90)


def finished(service, photos: list[bytes]) -> dict:
    resp = submit(service, photos)
    assert resp.status_code == 202, resp.text
    return job_end(resp.json()["status_url"], 300)


def result_pixels(status: dict) -> tuple[dict, np.ndarray]:
    assert status["status"] == "succeeded", status
    result = httpx.get(status["result_url"], timeout=10).json()
    served = httpx.get(result["images"][0]["url"], timeout=10)
    return result, np.asarray(Image.open(io.BytesIO(served.content)).convert("RGB"), dtype=np.int16)


def no_uploads_left(service) -> bool:
    storage = Storage.from_settings(service.settings)
    return storage.client.list_objects_v2(Bucket=storage.uploads_bucket).get("KeyCount", 0) == 0


def test_two_photos_of_one_person_make_other_images_than_one(service):
    one, one_pixels = result_pixels(finished(service, [jpeg(tom())]))
    two, two_pixels = result_pixels(finished(service, [jpeg(tom()), jpeg(tom_again())]))
    assert one["face_image_count"] == 1 and one["keypoints_face_image"] == 1
    assert two["face_image_count"] == 2 and two["keypoints_face_image"] in (1, 2)
    assert [p["keypoints"] for p in two["analysis"]["face_images"]].count(True) == 1
    # same seed and fields: only the combined identity (and the keypoints photo) changed
    assert one_pixels.shape == two_pixels.shape and np.abs(one_pixels - two_pixels).max() > 0
    until(lambda: no_uploads_left(service), 30, "the job's photos to be deleted")


def test_photos_of_two_people_fail_with_faces_differ(service):
    status = finished(service, [jpeg(tom()), jpeg(tom_again()), jpeg(stranger())])
    assert status["status"] == "failed", status
    assert status["error"]["code"] == "faces_differ"
    assert status["error"]["message"].startswith("Photo 3 of 3 does not show the same person")
    until(lambda: no_uploads_left(service), 30, "the job's photos to be deleted")


def test_a_second_photo_without_a_face_is_named(service):
    status = finished(service, [jpeg(tom()), uniform_jpeg()])
    assert status["status"] == "failed" and status["error"]["code"] == "no_face_detected", status
    assert status["error"]["message"].startswith("Photo 2 of 2: No face was found")


def test_six_photos_are_refused_before_anything_runs(service):
    resp = submit(service, [jpeg(tom())] * 6)
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "too_many_face_images", resp.text
