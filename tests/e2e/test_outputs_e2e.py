"""What a job's images come out as, through the real stack (Valkey, SeaweedFS, the gateway and a
Celery worker on the tiny profile, real HTTP): each output format stored and served with its own
Content-Type and file name, decoding as that format; every image's safety verdict and the judge
that scored it; and the safety check's forced flag withholding the stored image (the runner with
the real tiny pipeline against the real servers)."""

from __future__ import annotations

import io
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from idbody.stack.service import running_stack, stack_settings
from shared.jobs.record import JobRecord, JobStatus
from shared.jobs.store import JobStore
from shared.storage import Storage
from tests.e2e import finished_job
from tests.face_photos import tom, tom_jpeg

pytestmark = pytest.mark.integration

SUBMIT = "/api/v1/generate-identity-body"
SMALL = {"num_images": "2", "width": "64", "height": "64", "num_inference_steps": "2"}
PIL_FORMAT = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
EXTENSION = {"png": "png", "jpeg": "jpg", "webp": "webp"}


@pytest.fixture(scope="module")
def service(valkey, s3_server, tmp_path_factory):
    settings = stack_settings(valkey, s3_server, 13, "outputs", model_profile="tiny", auth_disabled=True,
                              device="cpu", tiny_model_dir=tmp_path_factory.getbasetemp() / "tiny-models")
    with running_stack(settings, tmp_path_factory.mktemp("outputs-logs"), io_worker=None) as stack:
        yield stack


def finished_result(service, **fields: str) -> dict:
    return finished_job.finished_result(service.base_url, {**SMALL, **fields})


@pytest.mark.parametrize(("output_format", "quality"), [("png", None), ("jpeg", "80"), ("webp", "60")])
def test_each_format_is_stored_served_and_named_as_asked(service, output_format, quality):
    fields = {"output_format": output_format, "style": "watercolor", "scene": "on a beach at sunset"}
    if quality:
        fields["output_quality"] = quality
    result = finished_result(service, **fields)
    assert result["count"] == 2
    for index, image in enumerate(result["images"]):
        assert image["content_type"] == f"image/{output_format}"
        assert image["file_name"] == f"identity_body_{index}.{EXTENSION[output_format]}"
        served = httpx.get(image["url"], timeout=10)
        assert served.status_code == 200
        assert served.headers["content-type"] == f"image/{output_format}"
        decoded = Image.open(io.BytesIO(served.content))
        assert decoded.format == PIL_FORMAT[output_format]
        decoded.load()
        assert decoded.size == (64, 64)


def test_every_image_carries_its_verdict_and_the_judge_is_named(service):
    result = finished_result(service)
    assert result["safety_check"] == "nudenet-320n"
    assert [image["nsfw"] for image in result["images"]] == [False, False]  # the tiny profile's noise
    # the tiny profile: dlib analyses the upload and judges, and the result says it is the same one
    assert result["identity_judge"] == "dlib-resnet" and result["identity_judge_independent"] is False
    assert all("below_threshold" in image and "identity_score" in image for image in result["images"])


def test_quality_with_png_is_refused_and_nothing_is_queued(service):
    resp = httpx.post(service.base_url + SUBMIT, data={**SMALL, "output_quality": "80"},
                      files={"face_image": ("me.jpg", tom_jpeg(), "image/jpeg")}, timeout=90)
    assert resp.status_code == 422
    error = resp.json()["error"]
    assert error["code"] == "invalid_parameter" and error["field"] == "output_quality"
    assert "jpeg or webp" in error["message"]


def test_forced_flag_stores_a_withheld_copy(settings, redis_client, tiny_model_dir):
    from worker.identity_pipeline import IdentityPipeline
    from worker.jobs.runner import run_job
    from worker.safety.screen import withheld_copy

    flagging = settings.model_copy(update={"safety_threshold": 0.0, "device": "cpu",
                                           "tiny_model_dir": tiny_model_dir,
                                           "onnx_providers": ["CPUExecutionProvider"]})
    pipeline = IdentityPipeline(flagging).load_models()
    store, storage = JobStore.from_settings(flagging), Storage.from_settings(flagging)
    storage.ensure_buckets()
    rid = f"forced{time.time_ns()}"
    key = storage.put_upload(rid, tom_jpeg(), "image/jpeg")
    store.create(JobRecord(request_id=rid, created_at=time.time(), upload_key=key,
                           params={"num_images": 1, "width": 256, "height": 256, "num_inference_steps": 1,
                                   "face_detail": False, "output_format": "webp"}))
    record = run_job(rid, pipeline, store, storage, deadline_s=600)
    assert record.status is JobStatus.SUCCEEDED
    (image,) = record.result.images
    assert image.nsfw is True and record.result.safety_check == "nudenet-320n"
    stored = Image.open(io.BytesIO(storage.client.get_object(Bucket=storage.results_bucket, Key=image.key)["Body"].read()))
    assert stored.format == "WEBP" and stored.size == (256, 256)
    # what is stored is the withheld copy of what the pipeline made for this seed, not the image itself
    made = pipeline.generate(tom(), num_images=1, width=256, height=256, num_inference_steps=1, face_detail=False,
                             seed=image.seed)["images"][0]
    withheld = np.asarray(withheld_copy(made), dtype=np.float32)
    assert np.abs(np.asarray(stored.convert("RGB"), dtype=np.float32) - withheld).mean() < 3  # webp's loss
    # (the tiny profile's images are nearly flat, so this cannot tell the copy from the image by
    # eye; tests/worker/safety shows the copy hides real faces)
