"""The seed's Python API end to end on the tiny profile: a real photo through the tiny antelopev2
models, the prompt, the retargeted keypoints and the batched pipeline."""

from __future__ import annotations

import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared.errors import ErrorCode, IdentityBodyError
from shared.settings import Settings
from worker.engine.loading import FALLBACK_NOTE
from worker.face.dlib_analyzer import DlibFaceAnalyzer
from worker.identity_pipeline import TINY_NOTE, IdentityPipeline, get_identity_pipeline
from worker.models import layout

insightface = pytest.importorskip("insightface")
PHOTO = Path(insightface.__file__).parent / "data" / "images" / "Tom_Hanks_54745.png"
SMALL = {"width": 128, "height": 128, "num_inference_steps": 2}


def face_photo() -> Image.Image:
    return Image.open(PHOTO).convert("RGB").resize((448, 448), Image.BICUBIC)


def _settings(**kw) -> Settings:
    return Settings(_env_file=None, device="cpu", onnx_providers=["CPUExecutionProvider"], **kw)


@pytest.fixture(scope="module")
def pipeline(tiny_model_dir) -> IdentityPipeline:
    return IdentityPipeline(_settings(model_profile="tiny", tiny_model_dir=tiny_model_dir)).load_models()


class Appearance:
    """An in-process appearance analyzer with the hook's contract: submit(pil) -> Future[dict]."""

    def __init__(self, answer: dict) -> None:
        self.answer, self.seen = answer, []
        self.pool = ThreadPoolExecutor(1)

    def submit(self, image: Image.Image) -> Future:
        self.seen.append(image.size)
        return self.pool.submit(lambda: dict(self.answer))


def test_seed_call_returns_images_analysis_method_note(pipeline):
    body = {"body_type": "athletic", "height_cm": 170, "weight_kg": 65, "gender": "female"}
    result = pipeline(face_image=face_photo(), body_params=body, num_images=4, seed=3, **SMALL)
    assert len(result["images"]) == 4 and all(i.size == (128, 128) for i in result["images"])
    # honest about the weights: InstantID's pipeline, but the tiny profile's random weights
    assert result["method"] == "instantid" and result["profile"] == "tiny" and result["base_model"] == "tiny"
    assert result["note"] == TINY_NOTE and "random" in result["note"]
    # what made the images; no pose ControlNet in the tiny folder: the pose is prompt-only
    assert result["parts"][:2] == ["sdxl", "vae-fp16-fix"] and result["parts"][-1] == "pose-prompt-only"
    assert result["analysis"]["face"]["face_count"] == 1
    face = result["analysis"]["face"]
    assert 0.5 < face["det_score"] <= 1 and min(face["box_size"]) >= 128
    assert len(result["image_details"]) == 4 and timings_has_score(result)
    assert result["analysis"]["appearance"]["status"] == "skipped"
    assert "athletic" in result["prompt"] and "woman" in result["prompt"]
    timings = result["timings"]
    assert len(timings["denoise_step_s"]) == 2 and 0 < timings["face_analysis_s"] < timings["total_s"]
    assert pipeline.pipe is pipeline.engine.pipe


def test_generate_validates_and_reports_progress(pipeline):
    with pytest.raises(IdentityBodyError) as err:
        pipeline.generate(face_photo(), height_cm=20)
    assert err.value.code == ErrorCode.INVALID_PARAMETER and err.value.field == "height_cm"
    steps = []
    result = pipeline.generate(face_photo(), pose="sitting", num_images=1, seed=5, mode="quality",
                               progress=lambda s, t: steps.append((s, t)), **SMALL)
    assert steps == [(1, 2), (2, 2)] and len(result["images"]) == 1
    with pytest.raises(IdentityBodyError) as err:
        pipeline.generate(face_photo(), num_images=1, progress=lambda s, t: False, **SMALL)
    assert err.value.code == ErrorCode.JOB_CANCELED


def test_an_unknown_base_model_fails_before_any_work(pipeline):
    steps = []
    with pytest.raises(IdentityBodyError) as err:
        pipeline.generate(face_photo(), base_model="nope", progress=lambda s, t: steps.append(s), **SMALL)
    assert err.value.code == ErrorCode.UNKNOWN_BASE_MODEL and steps == []
    # what the heartbeat publishes, and /api/v1/info lists
    assert [(b["name"], b["default"]) for b in pipeline.info()["base_models"]] == [("tiny", True), ("tiny-alt", False)]


def test_no_face_is_refused_before_generation(pipeline):
    with pytest.raises(IdentityBodyError) as err:
        pipeline.generate(Image.new("RGB", (448, 448), (128, 128, 128)), **SMALL)
    assert err.value.code == ErrorCode.NO_FACE_DETECTED


def test_appearance_fills_only_what_the_user_left_empty(pipeline):
    pipeline.appearance_analyzer = Appearance({"status": "ok", "skin_tone": "olive", "ethnicity": "Nordic"})
    try:
        result = pipeline.generate(face_photo(), ethnicity="East Asian", num_images=1, seed=1,
                                   use_gemini_analysis=True, **SMALL)
    finally:
        pipeline.appearance_analyzer = None
    assert result["analysis"]["appearance"]["status"] == "ok" and result["analysis"]["skin_tone"] == "olive"
    assert "East Asian" in result["prompt"] and "Nordic" not in result["prompt"] and "olive" in result["prompt"]


def test_vae_tiling_switch_works_on_pipe(pipeline):
    pipeline.pipe.enable_vae_tiling()
    try:
        assert pipeline.pipe.vae.use_tiling
    finally:
        pipeline.pipe.disable_vae_tiling()


def timings_has_score(result) -> bool:
    return 0 < result["timings"]["identity_score_s"] < result["timings"]["total_s"]


def test_candidates_are_one_batch_and_each_kept_image_is_its_seeds(pipeline):
    steps = []
    result = pipeline.generate(face_photo(), num_images=2, candidates=3, seed=11, min_identity_score=0.5,
                               progress=lambda s, t: steps.append(t), **SMALL)
    assert steps == [2, 2]  # one batch: progress counts the denoise steps once
    details = result["image_details"]
    assert len(result["images"]) == 2 and len(details) == 2
    seeds = [d["seed"] for d in details]
    assert len(set(seeds)) == 2 and set(seeds) <= {11, 12, 13}
    for detail in details:  # tiny weights draw noise: no face, so no score, and below the threshold
        assert detail["face_found"] is (detail["identity_score"] is not None)
        assert detail["below_threshold"] is (detail["identity_score"] is None or detail["identity_score"] < 0.5)
    alone = pipeline.generate(face_photo(), num_images=1, seed=seeds[1], **SMALL)
    difference = np.abs(np.asarray(alone["images"][0], np.int16) - np.asarray(result["images"][1], np.int16))
    assert difference.max() <= 3  # the kept image is the candidate of its seed
    assert alone["image_details"][0]["below_threshold"] is False  # no threshold given


def test_fallback_through_the_api(tiny_model_dir, tmp_path):
    folder = tmp_path / "models"
    shutil.copytree(tiny_model_dir, folder)
    shutil.rmtree(layout.part(folder, layout.CONTROLNET_DIR))
    pipe = IdentityPipeline(_settings(model_profile="instantid", model_dir=folder))
    pipe.face_analyzer = DlibFaceAnalyzer()  # the released antelopev2 pack is not reachable offline
    pipe.load_models()
    result = pipe(face_image=face_photo(), body_params={"gender": "male"}, num_images=2, seed=1, **SMALL)
    assert result["method"] == "sdxl_fallback" and result["note"] == FALLBACK_NOTE
    assert len(result["images"]) == 2 and np.asarray(result["images"][0]).std() > 0


def test_one_pipeline_per_process():
    first = get_identity_pipeline(_settings(model_profile="tiny"))
    assert get_identity_pipeline() is first and get_identity_pipeline(_settings()) is first


def test_auto_profile_is_the_workers_decision_taken_once(tiny_model_dir, tmp_path, monkeypatch):
    from worker.models import profile

    partial = tmp_path / "models"
    shutil.copytree(layout.part(tiny_model_dir, layout.SDXL_DIR), layout.part(partial, layout.SDXL_DIR))
    auto = _settings(model_profile="auto", model_dir=partial, tiny_model_dir=tiny_model_dir)
    decisions = []
    real = profile.choose_profile
    monkeypatch.setattr(profile, "choose_profile", lambda s: decisions.append(real(s)) or decisions[-1])
    pipe = IdentityPipeline(auto).load_models()
    pipe.load_models()
    assert len(decisions) == 1 and pipe.choice == decisions[0]
    assert pipe.profile == "tiny" and pipe.info()["profile"] == "tiny"  # the folder does not verify
    assert real(auto.model_copy(update={"model_profile": "instantid"})).model_dir == partial


class BrokenAppearance:
    """A hook whose future fails, or never resolves."""

    def __init__(self, raises: bool) -> None:
        self.raises = raises

    def submit(self, image: Image.Image) -> Future:
        future: Future = Future()
        if self.raises:
            future.set_exception(ConnectionError("socket closed"))
        return future


@pytest.mark.parametrize("raises,reason", [(True, "internal_error"), (False, "timeout")])
def test_a_broken_appearance_hook_gives_the_schema_shape_and_the_job_succeeds(pipeline, raises, reason):
    quick = pipeline.settings.model_copy(update={"gemini_timeout_s": 0.05})
    pipeline.settings, saved = quick, pipeline.settings
    pipeline.appearance_analyzer = BrokenAppearance(raises)
    try:
        result = pipeline.generate(face_photo(), num_images=1, seed=1, use_gemini_analysis=True, **SMALL)
    finally:
        pipeline.appearance_analyzer, pipeline.settings = None, saved
    appearance = result["analysis"]["appearance"]
    assert (appearance["status"], appearance["reason"]) == ("failed", reason)
    assert "the job ran without it" in appearance["message"] and len(result["images"]) == 1


def test_several_photos_of_one_person_combine_into_other_images(pipeline):
    from PIL import ImageOps

    run = {"num_images": 1, "seed": 3, **SMALL}
    one = pipeline.generate(face_photo(), **run)
    two = pipeline.generate([face_photo(), ImageOps.mirror(face_photo())], **run)
    assert (one["face_image_count"], one["keypoints_face_image"]) == (1, 1)
    assert two["face_image_count"] == 2 and len(two["analysis"]["face_images"]) == 2
    # the same seed and fields: the combined identity (and the keypoints photo) made other images
    assert not np.array_equal(np.asarray(one["images"][0]), np.asarray(two["images"][0]))
    for photos, code in (([face_photo()] * 6, ErrorCode.TOO_MANY_FACE_IMAGES), ([], ErrorCode.MISSING_FIELD)):
        with pytest.raises(IdentityBodyError) as refused:
            pipeline.generate(photos, **run)
        assert refused.value.code is code
