"""The face-detail pass (stage 4) on the tiny profile through the real code: real photos from the
insightface package as the "base image", the tiny profile's real (dlib) detector, InstantID
img2img on the loaded pipeline, the feathered paste."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from shared.errors import ErrorCode, IdentityBodyError
from shared.settings import Settings
from tests.face_photos import t1, tom
from tests.pipeline_inputs import face_embedding, pixels
from worker.engine.face_detail import FaceDetailInputs, detail_steps, refine_faces
from worker.engine.face_geometry import feather_mask

STEPS, STRENGTH = 4, 0.5            # 2 img2img steps per face


@pytest.fixture(scope="module")
def detect(tiny_model_dir):
    """The tiny profile's own analyzer, as the pipeline loads it."""
    from worker.pipeline_setup import face_analyzer_for

    analyzer = face_analyzer_for("tiny", tiny_model_dir, Settings(_env_file=None))
    analyzer.load()
    return analyzer.largest_face


@pytest.fixture(scope="module")
def full_body_frame() -> tuple[Image.Image, tuple[int, int, int, int]]:
    """Tom Hanks' face, 96 px, pasted where a head sits in a 256×384 frame; returns the frame
    and where the face photo went."""
    frame = Image.new("RGB", (256, 384), (118, 112, 104))
    where = (80, 30, 176, 126)
    frame.paste(tom(96), where[:2])
    return frame, where


def detail_inputs(**overrides) -> FaceDetailInputs:
    base = dict(prompt="close-up photo of the face of a man", negative_prompt="blurry", seed=3,
                face_embedding=face_embedding(0), steps=STEPS, strength=STRENGTH)
    return FaceDetailInputs(**{**base, **overrides})


def changed_pixels(a: Image.Image, b: Image.Image) -> np.ndarray:
    return np.abs(pixels(a) - pixels(b)).sum(axis=2) > 0


def feather_weight(size: tuple[int, int], box) -> np.ndarray:
    weight = np.zeros((size[1], size[0]), dtype=np.float32)
    x0, y0, x1, y1 = box
    weight[y0:y1, x0:x1] = feather_mask(x1 - x0)
    return weight


def test_the_pass_runs_on_the_loaded_pipeline_and_adds_no_weights(tiny_engine, detect, full_body_frame):
    calls = []
    hook = tiny_engine.pipe.unet.register_forward_pre_hook(lambda _m, _a: calls.append(1))
    before = sum(p.numel() for m in tiny_engine.pipe.components.values() if hasattr(m, "parameters")
                 for p in m.parameters())
    try:
        refine_faces(tiny_engine, [full_body_frame[0]], detect, detail_inputs())
    finally:
        hook.remove()
    after = sum(p.numel() for m in tiny_engine.pipe.components.values() if hasattr(m, "parameters")
                for p in m.parameters())
    assert len(calls) == detail_steps(STEPS, STRENGTH) and before == after


def test_real_photo_face_is_found_and_only_the_feathered_region_changes(tiny_engine, detect, full_body_frame):
    frame, where = full_body_frame
    out = refine_faces(tiny_engine, [frame], detect, detail_inputs())
    entry, refined = out.entries[0], out.images[0]
    assert entry.face_found and entry.applied and refined.size == frame.size
    x0, y0, x1, y1 = entry.crop_box
    assert x1 - x0 == y1 - y0, "the crop is square"
    face = detect(frame)
    assert x0 <= face.bbox[0] and y0 <= face.bbox[1] and x1 >= face.bbox[2] and y1 >= face.bbox[3]
    assert where[0] <= (x0 + x1) / 2 <= where[2] and where[1] <= (y0 + y1) / 2 <= where[3]
    weight = feather_weight(frame.size, entry.crop_box)
    changed = changed_pixels(frame, refined)
    assert not changed[weight == 0].any(), "a pixel outside the feathered region changed"
    assert changed[weight > 0.5].mean() > 0.5, "the face region was redrawn"
    assert out.timings["face_detail_steps"] == detail_steps(STEPS, STRENGTH) == 2


def test_group_photo_refines_the_largest_face_only_around_it(tiny_engine, detect):
    photo = t1().resize((640, 443), Image.LANCZOS)
    face = detect(photo)
    assert face is not None and face.face_count > 1
    out = refine_faces(tiny_engine, [photo], detect, detail_inputs())
    box = out.entries[0].crop_box
    assert box[0] <= face.bbox[0] and box[2] >= face.bbox[2]
    changed = changed_pixels(photo, out.images[0])
    assert not changed[feather_weight(photo.size, box) == 0].any()
    assert changed.any()


def test_the_input_embedding_drives_the_face_region(tiny_engine, detect, full_body_frame):
    frame, _ = full_body_frame
    first = refine_faces(tiny_engine, [frame], detect, detail_inputs())
    again = refine_faces(tiny_engine, [frame], detect, detail_inputs())
    other = refine_faces(tiny_engine, [frame], detect, detail_inputs(face_embedding=face_embedding(1)))
    assert np.array_equal(pixels(first.images[0]), pixels(again.images[0])), "same inputs, same pixels"
    inside = feather_weight(frame.size, first.entries[0].crop_box) > 0.5
    diff = np.abs(pixels(first.images[0]) - pixels(other.images[0])).sum(axis=2)
    assert diff[inside].mean() > 1.0, "another face embedding must redraw the face differently"
    assert diff[~(feather_weight(frame.size, first.entries[0].crop_box) > 0)].max() == 0


def test_image_without_a_face_is_returned_unchanged(tiny_engine, detect):
    flat = Image.new("RGB", (128, 160), (90, 90, 90))
    out = refine_faces(tiny_engine, [flat], detect, detail_inputs())
    assert out.images[0] is flat
    assert out.entries[0].as_dict() == {"face_found": False, "face_detail": "skipped",
                                        "face_detail_reason": "no_face", "face_crop_box": None}


def test_zero_strength_keeps_the_image(tiny_engine, detect, full_body_frame):
    frame, _ = full_body_frame
    out = refine_faces(tiny_engine, [frame], detect, detail_inputs(strength=0.0))
    assert out.images[0] is frame and out.entries[0].face_found and out.entries[0].reason == "no_steps"


def test_progress_counts_the_one_pass_for_all_images(tiny_engine, detect, full_body_frame):
    """All faces are refined in one pass: its steps are reported once, however many images (an
    image without a face adds no step)."""
    frame, _ = full_body_frame
    calls = []
    out = refine_faces(tiny_engine, [frame, Image.new("RGB", (128, 160)), frame], detect, detail_inputs(),
                       progress=lambda s, t: calls.append((s, t)))
    assert calls == [(1, 2), (2, 2)]
    assert [e.applied for e in out.entries] == [True, False, True] and out.timings["face_detail_steps"] == 4


def test_no_face_anywhere_counts_the_pass_as_done_at_once(tiny_engine, detect):
    calls = []
    flat = Image.new("RGB", (128, 160), (90, 90, 90))
    out = refine_faces(tiny_engine, [flat, flat], detect, detail_inputs(), progress=lambda s, t: calls.append((s, t)))
    assert calls == [(2, 2)] and out.images == [flat, flat]


def test_all_faces_go_through_one_batched_pass_equal_to_each_alone(tiny_engine, detect, full_body_frame):
    """The batched pass gives each image what refining it alone with its seed gives (seed + i for
    image i), within fp tolerance; and it is one pass: every UNet call holds both crops."""
    frame, _ = full_body_frame
    other = Image.new("RGB", (256, 384), (96, 104, 118))
    other.paste(tom(112), (60, 50))
    batch_sizes = []
    hook = tiny_engine.pipe.unet.register_forward_pre_hook(lambda _m, args: batch_sizes.append(args[0].shape[0]))
    try:
        together = refine_faces(tiny_engine, [frame, other], detect, detail_inputs(seed=3))
    finally:
        hook.remove()
    assert batch_sizes == [2] * detail_steps(STEPS, STRENGTH)
    alone = [refine_faces(tiny_engine, [image], detect, detail_inputs(seed=3 + i)) for i, image in
             enumerate((frame, other))]
    for i, single in enumerate(alone):
        assert together.entries[i].as_dict() == single.entries[0].as_dict()
        assert np.abs(pixels(together.images[i]) - pixels(single.images[0])).max() <= 3
    assert np.abs(pixels(together.images[0]) - pixels(frame)).max() > 3, "the pass redrew the face"


def test_face_passes_of_two_jobs_share_one_pass_each_getting_its_own(tiny_engine, detect, full_body_frame):
    """A micro-batch of face passes: two jobs (other person, prompt, seed) in one img2img pass, each
    getting what its pass alone gives."""
    from worker.engine.denoise_pass import run_pass
    from worker.engine.face_detail import plan_face_pass

    frame, _ = full_body_frame
    first = detail_inputs(seed=3)
    second = detail_inputs(seed=9, face_embedding=face_embedding(1), prompt="close-up photo of a smiling face")
    passes = [plan_face_pass(tiny_engine, [frame], detect, inputs) for inputs in (first, second)]
    results = run_pass(tiny_engine, [p.job() for p in passes])
    assert [r.timings["batch_rows"] for r in results] == [2, 2]
    together = [p.finish(r).images[0] for p, r in zip(passes, results)]
    alone = [refine_faces(tiny_engine, [frame], detect, inputs).images[0] for inputs in (first, second)]
    for shared, own in zip(together, alone):
        assert np.abs(pixels(shared) - pixels(own)).max() <= 3
    assert np.abs(pixels(together[0]) - pixels(together[1])).mean() > 0.1, "the jobs stayed apart"


def test_cancel_during_the_pass_stops_it_and_the_engine_still_works(tiny_engine, detect, full_body_frame):
    frame, _ = full_body_frame
    seen = []

    def stop_at_one(step, total):
        seen.append(step)
        return step < 1

    with pytest.raises(IdentityBodyError) as err:
        refine_faces(tiny_engine, [frame, frame], detect, detail_inputs(), progress=stop_at_one)
    assert err.value.code == ErrorCode.JOB_CANCELED
    assert seen == [1], "stopped at the pass's first step, for both faces at once"
    assert refine_faces(tiny_engine, [frame], detect, detail_inputs()).entries[0].applied


def test_one_cancel_path_for_the_base_and_the_face_pass(tiny_engine, detect, full_body_frame):
    """The same runner stops both passes: the same error, the same message, counted in the job's
    steps as the caller's StepCount places them."""
    from tests.pipeline_inputs import inputs
    from worker.engine.denoise_pass import StepCount
    from worker.engine.generation import generate_images

    with pytest.raises(IdentityBodyError) as base:
        generate_images(tiny_engine, inputs(steps=4), progress=lambda s, t: False, count=StepCount(total=6))
    with pytest.raises(IdentityBodyError) as face:
        refine_faces(tiny_engine, [full_body_frame[0]], detect, detail_inputs(), progress=lambda s, t: False,
                     count=StepCount(before=4, total=6))
    assert base.value.code == face.value.code == ErrorCode.JOB_CANCELED
    assert base.value.message == "Generation was canceled at step 1 of 6."
    assert face.value.message == "Generation was canceled at step 5 of 6."
