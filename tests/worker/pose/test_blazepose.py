"""The pose detector with its real models (BlazePose from the mediapipe wheel, run by LiteRT) on
real photos: a person's landmarks where the body is, and nobody in a texture."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.pose_photos import astronaut, cameraman, grass
from worker.pose.blazepose import LANDMARK_COUNT, PoseDetector, anchor_centres

NOSE, L_SHOULDER, R_SHOULDER, L_HIP, R_HIP = 0, 11, 12, 23, 24


@pytest.fixture(scope="module")
def detector() -> PoseDetector:
    return PoseDetector.load()


def test_the_anchor_grid_matches_the_detectors_outputs(detector):
    anchors = anchor_centres()
    boxes = detector.detector.get_output_details()
    assert len(anchors) == 2254 and {int(d["shape"][1]) for d in boxes} == {2254}
    assert (anchors > 0).all() and (anchors < 1).all()
    # the first anchors are the stride-8 grid's first row, two to a cell
    assert np.allclose(anchors[:4], [[0.5 / 28, 0.5 / 28]] * 2 + [[1.5 / 28, 0.5 / 28]] * 2)


def test_a_person_facing_the_camera_gets_their_body_landmarks(detector):
    pose = detector.detect(astronaut())
    assert pose is not None and pose.points.shape == (LANDMARK_COUNT, 2) and pose.score > 0.5
    nose, shoulders, hips = pose.points[NOSE], pose.points[[L_SHOULDER, R_SHOULDER]], pose.points[[L_HIP, R_HIP]]
    # her face is in the upper middle of the photo (by eye: nose near x 220, y 125 of 512)
    assert 170 < nose[0] < 270 and 80 < nose[1] < 170
    assert (shoulders[:, 1] > nose[1]).all() and (hips[:, 1] > shoulders[:, 1]).all()
    # facing the camera: her left shoulder is on the image's right
    assert shoulders[0, 0] > nose[0] > shoulders[1, 0]
    assert pose.visibility[NOSE] > 0.9 and pose.presence[NOSE] > 0.9


def test_a_person_in_a_grey_photo_seen_from_the_side_is_found(detector):
    pose = detector.detect(cameraman())
    assert pose is not None
    # his head is in the photo's upper middle (by eye: x 170-270, y 60-200 of 512)
    assert 150 < pose.points[NOSE, 0] < 290 and 50 < pose.points[NOSE, 1] < 210


@pytest.mark.parametrize("photo", [grass, lambda: Image.new("RGB", (320, 240), (90, 140, 200))],
                         ids=["grass", "plain"])
def test_nobody_in_the_photo_is_none(detector, photo):
    assert detector.detect(photo()) is None
