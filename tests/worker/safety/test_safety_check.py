"""The safety check with NudeNet's real 320n model on real, benign photos: they pass at the
default threshold, every image gets its verdict, and a threshold of 0 forces the flagged path
(the stored image becomes a blurred copy)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from shared.settings import Settings
from tests.face_photos import t1, tom
from worker.safety.nudity_detector import NudityDetector, model_input
from worker.safety.screen import (
    SafetyCheck,
    load_safety_check,
    safety_label,
    screen_images,
    withheld_copy,
)

pytest.importorskip("nudenet")

EXAMPLE = "docs/examples/face.jpg"


@pytest.fixture(scope="module")
def detector() -> NudityDetector:
    return NudityDetector.load(["CPUExecutionProvider"])


def photos() -> list[Image.Image]:
    return [Image.open(EXAMPLE).convert("RGB"), tom(), t1()]


def test_benign_photos_score_far_below_the_default_threshold(detector):
    scores = [detector.score(photo) for photo in photos()]
    assert all(0.0 <= s < 0.1 for s in scores), scores
    assert Settings(_env_file=None).safety_threshold == 0.5


def test_the_model_sees_the_face_it_was_trained_to_box(detector):
    # the loader's input matches the model: its face class finds the example's face (class 1,
    # FACE_FEMALE), so a near-zero exposed score is the model's answer, not a blind input
    (output,) = detector.session.run(None, {detector.input_name: model_input(Image.open(EXAMPLE))})
    assert output.shape[:2] == (1, 22)
    assert float(output[0, 4 + 1].max()) > 0.5


def test_model_input_letterboxes_to_a_320_square():
    tall = Image.new("RGB", (100, 200), (255, 255, 255))
    pixels = model_input(tall)
    assert pixels.shape == (1, 3, 320, 320) and pixels.dtype == np.float32
    assert pixels[0, :, :, :150].min() > 0.9      # the picture on the left half
    assert pixels[0, :, :, 170:].max() < 0.1      # black padding on the right


def test_every_image_gets_a_verdict_and_benign_ones_are_kept(detector):
    images = photos()
    details = [{"seed": i} for i in range(len(images))]
    kept, marked = screen_images(SafetyCheck(detector, 0.5), images, details)
    assert [d["nsfw"] for d in marked] == [False, False, False]
    assert [d["seed"] for d in marked] == [0, 1, 2]
    assert all(a is b for a, b in zip(kept, images))


def test_threshold_zero_flags_and_withholds_every_image(detector):
    from worker.face.dlib_analyzer import DlibFaceAnalyzer

    faces = DlibFaceAnalyzer()
    images = photos()
    kept, marked = screen_images(SafetyCheck(detector, 0.0), images, [{"seed": 1}, {"seed": 2}, {"seed": 3}])
    assert [d["nsfw"] for d in marked] == [True, True, True]
    for original, stored in zip(images, kept):
        assert stored.size == original.size
        assert stored is not original
        # the content is unreadable: a face detector finds the faces of the original, none in the copy
        assert faces.largest_face(original) is not None
        assert faces.largest_face(stored) is None


def test_check_off_marks_nothing_and_says_off():
    settings = Settings(_env_file=None, safety_check=False)
    check = load_safety_check(settings)
    assert check is None and safety_label(check) == "off"
    images = photos()
    kept, marked = screen_images(check, images, [{"seed": 0}] * 3)
    assert kept == images and [d["nsfw"] for d in marked] == [None, None, None]


def test_on_by_default_with_the_detector_named():
    check = load_safety_check(Settings(_env_file=None))
    assert check is not None and check.threshold == 0.5
    assert safety_label(check) == "nudenet-320n"


def test_withheld_copy_keeps_the_size_of_tiny_images():
    assert withheld_copy(Image.new("RGB", (20, 10))).size == (20, 10)
