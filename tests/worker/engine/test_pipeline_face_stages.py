"""Stages 3 and 4 through the seed's Python API on the tiny profile: progress counts the
face-detail pass, each image says what the pass did, the default size is the profile's, and the
per-image entries reach the stored job result and its JSON view."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from PIL import Image

from shared.jobs.record import JobRecord, JobStatus
from shared.jobs.store import JobStore
from shared.jobs.views import result_view
from shared.settings import Settings
from shared.storage import Storage
from worker.identity_pipeline import IdentityPipeline
from worker.jobs.runner import run_job

insightface = pytest.importorskip("insightface")
PHOTO = Path(insightface.__file__).parent / "data" / "images" / "Tom_Hanks_54745.png"


def face_photo() -> Image.Image:
    return Image.open(PHOTO).convert("RGB").resize((448, 448), Image.BICUBIC)


@pytest.fixture(scope="module")
def pipeline(tiny_model_dir) -> IdentityPipeline:
    settings = Settings(_env_file=None, device="cpu", onnx_providers=["CPUExecutionProvider"],
                        model_profile="tiny", tiny_model_dir=tiny_model_dir)
    return IdentityPipeline(settings).load_models()


def test_progress_totals_include_the_face_detail_steps(pipeline):
    calls = []
    result = pipeline.generate(face_photo(), num_images=2, seed=4, width=128, height=128, num_inference_steps=4,
                               face_detail_strength=0.5, progress=lambda s, t: calls.append((s, t)))
    # 4 base steps + one face pass of int(4 × 0.5) steps for both images, out of one total from the
    # first step on. Where no face is found in any image (the tiny profile's random images may or
    # may not hold something the detector takes for one), the pass's steps count at once.
    applied = any(info["face_detail"] == "applied" for info in result["image_details"])
    assert all(info["face_detail"] == "applied" or info["face_detail_reason"] == "no_face"
               for info in result["image_details"])
    assert calls == [(s, 6) for s in (1, 2, 3, 4)] + ([(5, 6), (6, 6)] if applied else [(6, 6)])
    assert pipeline.total_steps(pipeline_params(num_images=2, num_inference_steps=4, face_detail_strength=0.5)) == 6
    assert "face_detail_s" in result["timings"]


def pipeline_params(**fields):
    from shared.params import parse_params

    return parse_params(fields)


def test_face_detail_off_runs_only_the_base_steps(pipeline):
    calls = []
    result = pipeline.generate(face_photo(), num_images=1, seed=4, width=128, height=128, num_inference_steps=3,
                               face_detail=False, progress=lambda s, t: calls.append((s, t)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    details = result["image_details"][0]
    assert (details["face_detail"], details["face_detail_reason"]) == ("skipped", "off")


def test_default_size_is_the_profiles_full_body_bucket(pipeline):
    result = pipeline.generate(face_photo(), num_images=1, seed=1, num_inference_steps=1, face_detail=False)
    # SDXL's 832×1216 bucket at the tiny UNet's scale (128 px native instead of 1024)
    assert result["images"][0].size == (104, 152)


class ReportingEngine:
    """The generate() contract with per-image entries, so the runner's bookkeeping is
    checked without diffusers (the real pass is in tests/test_face_detail.py)."""

    def total_steps(self, params):
        return params.steps()

    def generate(self, face_image, params, progress=None, pose_image=None):
        images = [Image.new("RGB", (64, 64), (i * 60, 0, 0)) for i in range(2)]
        info = [{"face_found": True, "face_detail": "applied", "face_detail_reason": None},
                {"face_found": False, "face_detail": "skipped", "face_detail_reason": "no_face"}]
        return {"images": images, "image_details": info, "analysis": {}, "method": "instantid", "note": None}


@pytest.mark.integration
def test_each_result_image_says_what_the_face_pass_did(settings, redis_client):
    store, storage = JobStore.from_settings(settings), Storage.from_settings(settings)
    storage.ensure_buckets()
    rid = f"r{time.time_ns()}"
    buf = io.BytesIO()
    Image.new("RGB", (96, 96), (200, 180, 160)).save(buf, format="PNG")
    key = storage.put_upload(rid, buf.getvalue(), "image/png")
    store.create(JobRecord(request_id=rid, created_at=time.time(), upload_key=key, params={"num_images": 2}))
    record = run_job(rid, ReportingEngine(), store, storage, deadline_s=60)
    assert record.status == JobStatus.SUCCEEDED
    assert [(i.face_found, i.face_detail, i.face_detail_reason) for i in record.result.images] == [
        (True, "applied", None), (False, "skipped", "no_face")]
    view = result_view(store.get(rid), lambda k: f"https://example.test/{k}")
    assert view["images"][1]["face_found"] is False and view["images"][1]["face_detail_reason"] == "no_face"
    assert view["images"][0]["face_detail"] == "applied"


def test_a_callback_that_takes_a_stage_hears_face_detail_for_the_pass(pipeline):
    seen = []
    pipeline.generate(face_photo(), num_images=1, seed=4, width=128, height=128, num_inference_steps=4,
                      face_detail_strength=0.5, progress=lambda s, t, stage="denoising": seen.append((s, stage)))
    assert [stage for s, stage in seen if s <= 4] == ["denoising"] * 4
    assert seen[-1] == (6, "face_detail")


@pytest.mark.integration
def test_the_job_total_is_the_same_from_the_first_status_to_the_last(pipeline, settings, redis_client):
    """A real job on the tiny profile: the record's progress total is base + face-detail steps
    from the first write (analyzing_face) on, through both passes, to the upload."""
    from tests.shared.jobs.test_job_progress import RecordingStore

    store, storage = RecordingStore(JobStore.from_settings(settings)), Storage.from_settings(settings)
    storage.ensure_buckets()
    rid = f"r{time.time_ns()}"
    buf = io.BytesIO()
    face_photo().save(buf, format="PNG")
    key = storage.put_upload(rid, buf.getvalue(), "image/png")
    store.create(JobRecord(request_id=rid, created_at=time.time(), upload_key=key, params={
        "num_images": 2, "width": 128, "height": 128, "num_inference_steps": 4, "face_detail_strength": 0.5}))
    record = run_job(rid, pipeline, store, storage, deadline_s=600)
    assert record.status == JobStatus.SUCCEEDED
    assert store.writes[0]["stage"] == "analyzing_face" and store.writes[-1]["stage"] == "uploading"
    assert {w["total"] for w in store.writes} == {6}
    steps = [w["step"] for w in store.writes if w["stage"] in ("denoising", "face_detail")]
    assert steps[:4] == [1, 2, 3, 4] and steps[-1] == 6
