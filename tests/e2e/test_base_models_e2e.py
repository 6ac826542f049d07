"""Base checkpoints through the real stack (Valkey, SeaweedFS, the gateway and a Celery worker on
the tiny profile, which ships two bases, real HTTP): /api/v1/info lists them, a job naming the
second base runs on it (the worker logs the switch, the result names the base) and its images
differ from the default base's with the same seed, a job on the default switches back to the very
same images, and an unknown name is refused at submit with the names there are."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from idbody.stack.service import running_stack, stack_settings
from tests.e2e.finished_job import SUBMIT, finished_result
from tests.face_photos import tom_jpeg

pytestmark = pytest.mark.integration

SAME = {"num_images": "1", "width": "64", "height": "64", "num_inference_steps": "2", "seed": "1234"}


@pytest.fixture(scope="module")
def service(valkey, s3_server, tmp_path_factory):
    settings = stack_settings(valkey, s3_server, 11, "bases", model_profile="tiny", auth_disabled=True,
                              device="cpu", tiny_model_dir=tmp_path_factory.getbasetemp() / "tiny-models")
    with running_stack(settings, tmp_path_factory.mktemp("bases-logs"), io_worker=None) as stack:
        yield stack


def submit(service, **fields: str) -> httpx.Response:
    return httpx.post(service.base_url + SUBMIT, data={**SAME, **fields},
                      files={"face_image": ("me.jpg", tom_jpeg(), "image/jpeg")}, timeout=90)


def finished(service, **fields: str) -> tuple[dict, np.ndarray]:
    """The result of a job that succeeded, and its first image's pixels."""
    result = finished_result(service.base_url, {**SAME, **fields})
    image = httpx.get(result["images"][0]["url"], timeout=10)
    return result, np.asarray(Image.open(io.BytesIO(image.content)).convert("RGB"), dtype=np.int16)


def test_info_lists_both_bases_the_default_first(service):
    bases = httpx.get(service.base_url + "/api/v1/info", timeout=10).json()["base_models"]
    assert [(b["name"], b["default"]) for b in bases] == [("tiny", True), ("tiny-alt", False)]
    assert all(len(b["digest"]) == 12 for b in bases)


def test_a_job_on_the_second_base_switches_and_the_default_switches_back(service):
    first, default_pixels = finished(service)
    assert first["base_model"] == "tiny"
    other, other_pixels = finished(service, base_model="tiny-alt")
    assert other["base_model"] == "tiny-alt"
    assert np.abs(other_pixels - default_pixels).mean() > 5       # another base's weights drew it
    assert "base model tiny -> tiny-alt" in service.log("gpu0")
    again, again_pixels = finished(service, base_model="tiny")
    assert again["base_model"] == "tiny"
    assert "base model tiny-alt -> tiny" in service.log("gpu0")
    # the worker runs the plain engine on the CPU: PEFT's LoRA fuse round trip may move an ulp
    assert np.abs(again_pixels - default_pixels).mean() < 0.5


def test_an_unknown_base_is_refused_at_submit_with_the_names(service):
    resp = submit(service, base_model="juggernaut")
    assert resp.status_code == 422
    error = resp.json()["error"]
    assert error["code"] == "unknown_base_model" and error["field"] == "base_model"
    assert "tiny, tiny-alt" in error["message"]
