"""Pose control: the OpenPose skeleton placed on the face keypoints, then the optional pose
ControlNet on the tiny profile (random weights, real loading and pipeline code): present, it
conditions the images; absent, the pose is prompt-only and the result says so."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from shared.settings import Settings
from tests.face_photos import tom
from tests.pipeline_inputs import PORTRAIT_KPS, pixels
from worker.engine.pose_skeleton import COLORS, JOINTS, TEMPLATES, draw_pose, pose_points
from worker.face.keypoints import retarget_kps
from worker.identity_pipeline import IdentityPipeline

J = {name: i for i, name in enumerate(JOINTS)}
SMALL = dict(width=128, height=128, num_inference_steps=2, face_detail=False, num_images=1, seed=5)


@pytest.mark.parametrize("pose", sorted(TEMPLATES))
def test_the_skeletons_head_is_the_retargeted_face_and_the_body_fits_the_frame(pose):
    kps = retarget_kps(PORTRAIT_KPS, 832, 1216, pose)
    points = pose_points(pose, kps)
    assert np.allclose(points[J["nose"]], kps[2]) and np.allclose(points[J["r_eye"]], kps[0])
    assert np.allclose(points[J["l_eye"]], kps[1])
    assert (points >= 0).all() and (points[:, 0] <= 832).all() and (points[:, 1] <= 1216).all()
    # facing the camera: the person's right side is on the image's left
    assert points[J["r_shoulder"], 0] < points[J["neck"], 0] < points[J["l_shoulder"], 0]
    assert points[J["neck"], 1] < points[J["r_hip"], 1] < points[J["r_knee"], 1] < points[J["r_ankle"], 1]


def test_the_skeleton_scales_with_the_face_and_sitting_is_shorter():
    kps = retarget_kps(PORTRAIT_KPS, 832, 1216, "standing")
    nose = kps[2]
    doubled = (kps - nose) * 2 + nose
    standing, big = pose_points("standing", kps), pose_points("standing", doubled)
    assert np.allclose(big - nose, (standing - nose) * 2, atol=1e-3)
    sitting = pose_points("sitting", kps)
    height = lambda p: p[J["r_ankle"], 1] - p[J["nose"], 1]  # noqa: E731
    assert height(sitting) < 0.85 * height(standing)


def test_the_skeleton_is_drawn_in_openposes_colours_on_black():
    points = pose_points("standing", retarget_kps(PORTRAIT_KPS, 512, 768, "standing"))
    image = np.asarray(draw_pose(512, 768, points))
    assert image.shape == (768, 512, 3) and (image[0, 0] == 0).all()
    # the middle of the neck-to-right-shoulder limb carries the first limb colour, dimmed to 60%
    x, y = ((points[J["neck"]] + points[J["r_shoulder"]]) / 2).round().astype(int)
    assert tuple(image[y, x]) == tuple(int(c * 0.6) for c in COLORS[0])
    # each joint is a dot of its own colour
    x, y = points[J["r_knee"]].round().astype(int)
    assert tuple(image[y, x]) == COLORS[J["r_knee"]]


# --- the pose ControlNet on the tiny profile ---------------------------------------------------------


@pytest.fixture(scope="module")
def pose_model_dir(tiny_model_dir: Path, tmp_path_factory) -> Path:
    """The tiny folder plus the optional pose ControlNet (the other parts linked, not copied)."""
    from worker.tiny.model_dir import add_tiny_pose_controlnet

    folder = tmp_path_factory.mktemp("tiny-with-pose")
    for entry in Path(tiny_model_dir).iterdir():
        (folder / entry.name).symlink_to(entry)
    add_tiny_pose_controlnet(folder)
    return folder


def _pipeline(model_dir: Path, **settings) -> IdentityPipeline:
    return IdentityPipeline(Settings(_env_file=None, device="cpu", model_profile="tiny", tiny_model_dir=model_dir,
                                     **settings)).load_models()


@pytest.fixture(scope="module")
def pose_pipeline(pose_model_dir: Path) -> IdentityPipeline:
    return _pipeline(pose_model_dir)


def test_with_its_weights_the_pose_conditions_the_image(pose_pipeline):
    result = pose_pipeline.generate(tom(), pose="standing", **SMALL)
    assert "pose-controlnet" in result["parts"] and "pose-prompt-only" not in result["parts"]
    walking = pose_pipeline.generate(tom(), pose="walking", **SMALL)
    # the same seed and face: only the pose (prompt word and skeleton) differs
    assert float(np.abs(pixels(result["images"][0]) - pixels(walking["images"][0])).mean()) > 0.5
    # and the skeleton itself counts: with the pose net's weights zeroed the walking image changes
    net = pose_pipeline.engine.pipe.pose_controlnet
    saved = {k: v.clone() for k, v in net.state_dict().items()}
    try:
        for block in [*net.controlnet_down_blocks, net.controlnet_mid_block]:
            block.weight.data.zero_()
            block.bias.data.zero_()
        silent = pose_pipeline.generate(tom(), pose="walking", **SMALL)
    finally:
        net.load_state_dict(saved)
    assert float(np.abs(pixels(silent["images"][0]) - pixels(walking["images"][0])).mean()) > 0.5


def test_without_its_weights_the_pose_is_prompt_only_and_says_so(tiny_model_dir, tiny_engine, caplog):
    from worker.engine.loading import _load_pose_controlnet

    with caplog.at_level(logging.INFO, logger="worker.engine.loading"):
        assert _load_pose_controlnet(tiny_model_dir, tiny_engine.policy) is None
    assert "no pose ControlNet" in caplog.text and "--with pose" in caplog.text
    assert tiny_engine.pipe.pose_controlnet is None and not tiny_engine.pose_control
    assert tiny_engine.parts[-1] == "pose-prompt-only" and "pose-controlnet" not in tiny_engine.parts


def test_jobs_with_skeletons_batch_on_the_fast_engine_each_with_its_own(pose_model_dir):
    from concurrent.futures import ThreadPoolExecutor

    pipeline = _pipeline(pose_model_dir, engine_fast="on", max_batch_images=2)
    passes: list[tuple[int, int]] = []
    pipeline.enable_micro_batching(on_pass=lambda jobs, images: passes.append((jobs, images)))
    pipeline.batcher.window_s = 30.0  # two single-image jobs fill the batch; the clock never ends it
    jobs = [dict(SMALL, pose="standing", seed=1), dict(SMALL, pose="sitting", seed=2)]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda kw: pipeline.generate(tom(), **kw), jobs))
    pipeline.batcher.close()  # its thread's OpenMP team would slow every later CPU test
    assert passes == [(2, 2)]
    pipeline.batcher = None
    for shared, kw in zip(together, jobs):
        alone = pipeline.generate(tom(), **kw)
        diff = np.abs(pixels(shared["images"][0]) - pixels(alone["images"][0]))
        assert float(diff.mean()) < 0.75 and int(diff.max()) <= 12


# --- a pose photo in place of the template ---------------------------------------------------------


def test_a_pose_photo_draws_its_own_skeleton_with_the_head_where_the_photos_is(pose_pipeline):
    from shared.params import parse_params
    from tests.pose_photos import astronaut
    from worker.engine.job_inputs import base_inputs
    from worker.pose.photo_skeleton import photo_layout

    engine, face = pose_pipeline.engine, pose_pipeline.face_analyzer.analyze(tom())
    params = parse_params({"width": 128, "height": 192})
    body = pose_pipeline.pose_detector.detect(astronaut())
    template, template_prompt = base_inputs(engine, face, params, {}, seed=1, count=1)
    photo, photo_prompt = base_inputs(engine, face, params, {}, seed=1, count=1, body=body)
    # both conditions change: the skeleton and the head IdentityNet draws
    assert np.abs(pixels(photo.pose_image) - pixels(template.pose_image)).mean() > 1.0
    assert np.abs(pixels(photo.kps_image) - pixels(template.kps_image)).mean() > 0.5
    # the skeleton drawn is the photo's layout: the head's dot sits on the face the photo's head became
    layout = photo_layout(body, face.kps, 128, 192)
    x, y = layout.joints[J["nose"]].round().astype(int)
    assert tuple(np.asarray(photo.pose_image)[y, x]) == COLORS[J["nose"]]
    # and the prompt no longer names the template's pose
    assert "standing upright" in template_prompt.positive and "standing" not in photo_prompt.positive


def test_a_pose_photo_sets_the_jobs_pose_and_the_result_says_so(pose_pipeline):
    from tests.pose_photos import astronaut

    result = pose_pipeline.generate(tom(), pose_image=astronaut(), **SMALL)
    assert result["pose_source"] == "photo" and "pose-controlnet" in result["parts"]
    assert result["timings"]["pose_detection_s"] > 0
    template = pose_pipeline.generate(tom(), **SMALL)
    assert template["pose_source"] == "standing"
    assert float(np.abs(pixels(result["images"][0]) - pixels(template["images"][0])).mean()) > 0.5


def test_a_pose_photo_without_a_person_is_refused_with_its_code(pose_pipeline):
    from shared.errors import ErrorCode, IdentityBodyError
    from tests.pose_photos import grass

    with pytest.raises(IdentityBodyError) as refused:
        pose_pipeline.generate(tom(), pose_image=grass(), **SMALL)
    assert refused.value.code is ErrorCode.NO_PERSON_IN_POSE_IMAGE and refused.value.field == "pose_image"
    assert "pose photo" in refused.value.message


def test_without_a_pose_controlnet_a_pose_photo_places_the_head_and_the_result_says_so(tiny_model_dir):
    from tests.pose_photos import astronaut

    pipeline = _pipeline(tiny_model_dir)
    result = pipeline.generate(tom(), pose_image=astronaut(), **SMALL)
    assert result["pose_source"] == "photo"
    assert "pose-photo-head-only" in result["parts"] and "pose-prompt-only" not in result["parts"]
    assert "only placed the head" in result["note"]
    assert pipeline.info()["pose_photos"] is True and pipeline.info()["pose_controlnet"] is False
