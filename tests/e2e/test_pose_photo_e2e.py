"""A pose photo through the real stack: the gateway and a Celery worker on the tiny profile with
the optional pose ControlNet, Valkey, SeaweedFS, real HTTP, and the web page in a real headless
Chromium. A photo of a person sets the job's pose (the detector's real models), beside two face
photos of one person; a photo of nobody fails the job with its code; every upload is gone once the
job ends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from idbody.stack.polling import until
from idbody.stack.service import ServiceStack, running_stack, stack_settings
from shared.jobs.store import JobStore
from shared.storage import Storage
from tests.e2e import test_web_page
from tests.e2e.finished_job import SUBMIT, job_end
from tests.e2e.test_web_page import ARTIFACTS, DESKTOP, FACE, PHONE
from tests.face_photos import jpeg, tom_again, tom_jpeg
from tests.pose_photos import astronaut, grass

pytestmark = pytest.mark.integration
browser = test_web_page.browser   # the same real Chromium fixture as the page's own tests

SMALL = {"num_images": "1", "width": "64", "height": "96", "num_inference_steps": "2", "face_detail": "false"}


@pytest.fixture(scope="module")
def stack(valkey, s3_server, tmp_path_factory) -> Iterator[ServiceStack]:
    from worker.tiny.model_dir import add_tiny_pose_controlnet, build_tiny_model_dir

    models = build_tiny_model_dir(tmp_path_factory.mktemp("tiny-with-pose"))
    add_tiny_pose_controlnet(models)
    settings = stack_settings(valkey, s3_server, 4, "pose", tiny_model_dir=models, model_profile="tiny",
                              device="cpu", auth_disabled=True, default_width=64, default_height=96)
    with running_stack(settings, tmp_path_factory.mktemp("pose-logs"), io_worker=None) as service:
        yield service


@pytest.fixture(scope="module")
def job_deadline_s(stack: ServiceStack) -> float:
    """From the worker's own measured warm-up, generous for a machine other work keeps busy."""
    warmup_s = max(float(w.get("warmup_s", 1.0)) for w in JobStore.from_settings(stack.settings).live_workers())
    return max(120.0, 60 * warmup_s)


def finished(stack: ServiceStack, pose: bytes, deadline_s: float, faces: list[bytes] | None = None) -> tuple[str, dict]:
    files = [("face_image", (f"me{i}.jpg", face, "image/jpeg")) for i, face in enumerate(faces or [tom_jpeg()])]
    resp = httpx.post(stack.base_url + SUBMIT, data=SMALL, timeout=90,
                      files=[*files, ("pose_image", ("pose.jpg", pose, "image/jpeg"))])
    assert resp.status_code == 202, resp.text
    return resp.json()["request_id"], job_end(resp.json()["status_url"], deadline_s)


def uploads_of(stack: ServiceStack, request_id: str) -> list[str]:
    storage = Storage.from_settings(stack.settings)
    listed = storage.client.list_objects_v2(Bucket=storage.uploads_bucket, Prefix=f"{request_id}/")
    return [o["Key"] for o in listed.get("Contents", [])]


def test_a_photo_of_a_person_sets_the_pose_and_every_upload_goes_with_the_job(stack, job_deadline_s):
    rid, status = finished(stack, jpeg(astronaut()), job_deadline_s, faces=[tom_jpeg(), jpeg(tom_again())])
    assert status["status"] == "succeeded", status
    result = httpx.get(status["result_url"], timeout=10).json()
    assert result["pose_source"] == "photo" and "pose-controlnet" in result["parts"]
    assert result["count"] == 1 and result["face_image_count"] == 2
    # two face photos and the pose photo were stored as three uploads of the job, and all three go
    record = JobStore.from_settings(stack.settings).get(rid)
    assert record.upload_keys == [f"{rid}/face.jpg", f"{rid}/face_2.jpg", f"{rid}/pose.jpg"]
    assert record.pose_upload_key == f"{rid}/pose.jpg"
    until(lambda: uploads_of(stack, rid) == [], 30, "the face and pose uploads to be deleted")


def test_a_photo_of_nobody_fails_the_job_with_its_code(stack, job_deadline_s):
    rid, status = finished(stack, jpeg(grass()), job_deadline_s)
    assert status["status"] == "failed"
    assert status["error"]["code"] == "no_person_in_pose_image"
    assert "pose photo" in status["error"]["message"]
    until(lambda: uploads_of(stack, rid) == [], 30, "the face and pose uploads to be deleted")


def test_the_page_sends_a_pose_photo_and_says_the_pose_came_from_it(stack, browser, job_deadline_s, tmp_path: Path):
    pose_file = tmp_path / "dancer.jpg"
    pose_file.write_bytes(jpeg(astronaut()))
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    page = context.new_page()
    try:
        page.goto(stack.base_url + "/")
        page.wait_for_selector("#submit:not([disabled])")
        # the hint is the server's own word on what a pose photo does here
        assert "pose_image" in page.inner_text("#pose-hint") and page.is_hidden("#pose-clear")
        page.set_input_files("#photo", str(FACE))
        page.set_input_files("#pose-photo", str(pose_file))
        assert page.is_visible("#pose-clear")
        page.fill("#param-num_images", "1")
        page.click("#submit")
        page.wait_for_function("document.querySelector('#status').dataset.status === 'succeeded'",
                               timeout=1000 * job_deadline_s)
        page.wait_for_function("document.querySelector('#result-note').dataset.poseSource === 'photo'",
                               timeout=30_000)
        assert "The pose comes from the pose photo." in page.inner_text("#result-note")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "phone-pose-photo.png"), full_page=True)
        page.set_viewport_size(DESKTOP)
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        page.screenshot(path=str(ARTIFACTS / "desktop-pose-photo.png"), full_page=True)
        # removing the photo leaves the field empty: the next job uses the Pose template again
        page.click("#pose-clear")
        assert page.evaluate("document.querySelector('#pose-photo').files.length") == 0
    finally:
        context.close()
