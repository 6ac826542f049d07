"""Keypoint drawing matches InstantID's conditioning image; retargeting keeps the face's shape and
puts the head where a full-body frame needs it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from worker.face.keypoints import DEFAULT_HEAD_SCALE, KPS_COLORS, draw_kps, retarget_kps

# A frontal face in a 512x512 portrait, far enough apart that circles do not overlap.
PORTRAIT_KPS = np.array(
    [[180.0, 200.0], [330.0, 200.0], [255.0, 280.0], [195.0, 360.0], [315.0, 360.0]],
    dtype=np.float32,
)


def rgb(image, x, y):
    return tuple(int(c) for c in np.asarray(image)[int(y), int(x)])


def test_canvas_size_mode_and_black_background():
    image = draw_kps(300, 420, PORTRAIT_KPS * 0.5)
    assert image.size == (300, 420)
    assert image.mode == "RGB"
    assert rgb(image, 5, 5) == (0, 0, 0)
    assert rgb(image, 299, 419) == (0, 0, 0)


def test_points_have_exact_colours_in_insightface_order():
    image = draw_kps(512, 512, PORTRAIT_KPS)
    for (x, y), colour in zip(PORTRAIT_KPS, KPS_COLORS):
        assert rgb(image, x, y) == colour
        # filled circle of radius 10: 9 px away still the colour, 12 px away not
        assert rgb(image, x + 9, y) == colour
        assert rgb(image, x, y - 9) == colour
        assert rgb(image, x - 12, y - 12) != colour
    expected = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255)]
    assert list(KPS_COLORS) == expected


@pytest.mark.parametrize("index", [0, 1, 3, 4])
def test_limbs_join_points_to_nose_in_dimmed_point_colour(index):
    image = draw_kps(512, 512, PORTRAIT_KPS)
    mid = (PORTRAIT_KPS[index] + PORTRAIT_KPS[2]) / 2
    got = np.array(rgb(image, *mid), dtype=float)
    want = np.array(KPS_COLORS[index], dtype=float) * 0.6
    assert np.abs(got - want).max() <= 1  # 255 * 0.6 = 153
    assert got.max() == 153


def test_limb_is_a_thin_ellipse():
    image = draw_kps(512, 512, PORTRAIT_KPS)
    # the eye-to-nose limb of point 0 runs along (75, 80); its normal is (-80, 75)/|.|
    a, nose = PORTRAIT_KPS[0], PORTRAIT_KPS[2]
    mid = (a + nose) / 2
    normal = np.array([-(nose - a)[1], (nose - a)[0]])
    normal /= np.linalg.norm(normal)
    assert rgb(image, *(mid + 2 * normal)) != (0, 0, 0)  # inside the half-width of 4
    assert rgb(image, *(mid + 7 * normal)) == (0, 0, 0)  # outside it


def test_nose_has_no_limb_of_its_own_colour():
    image = np.asarray(draw_kps(512, 512, PORTRAIT_KPS))
    dim_blue = np.all(image == (0, 0, 153), axis=-1)
    assert not dim_blue.any()


def spread(points):
    centre = points.mean(axis=0)
    return float(np.sqrt(((points - centre) ** 2).sum(axis=1).mean()))


def angles(points):
    # the angle at the nose between each pair of limbs, a scale- and translation-invariant shape
    v = points[[0, 1, 3, 4]] - points[2]
    out = []
    for i in range(4):
        for j in range(i + 1, 4):
            cos = np.dot(v[i], v[j]) / (np.linalg.norm(v[i]) * np.linalg.norm(v[j]))
            out.append(math.degrees(math.acos(np.clip(cos, -1, 1))))
    return np.array(out)


def ratios(points):
    d = np.linalg.norm(points[:, None] - points[None], axis=-1)
    return d[np.triu_indices(5, 1)] / d[0, 1]


@pytest.mark.parametrize("pose", ["standing", "walking", "sitting"])
def test_retarget_keeps_face_shape_up_to_scale(pose):
    tilted = PORTRAIT_KPS @ np.array([[0.96, 0.28], [-0.28, 0.96]], dtype=np.float32) + 40
    out = retarget_kps(tilted, 768, 1024, pose)
    assert out.shape == (5, 2) and out.dtype == np.float32
    np.testing.assert_allclose(ratios(out), ratios(tilted), rtol=1e-4)
    np.testing.assert_allclose(angles(out), angles(tilted), atol=1e-2)
    # orientation is kept too: the eye line has the same slope
    eye, eye_out = tilted[1] - tilted[0], out[1] - out[0]
    assert math.isclose(math.atan2(*eye[::-1]), math.atan2(*eye_out[::-1]), abs_tol=1e-4)


@pytest.mark.parametrize("pose", ["standing", "walking", "sitting"])
def test_retargeted_head_is_small_centred_and_in_the_upper_frame(pose):
    out = retarget_kps(PORTRAIT_KPS, 768, 1024, pose)
    assert np.all(out[:, 1] < 1024 / 3), "head belongs in the upper third of a full-body frame"
    assert np.all(out[:, 1] > 0) and np.all((out[:, 0] > 0) & (out[:, 0] < 768))
    assert abs(out[:, 0].mean() - 384) < 1
    # much smaller than in the portrait (that is what stops IdentityNet drawing a portrait)
    assert spread(out) < spread(PORTRAIT_KPS) / 2


def test_sitting_head_is_lower_than_standing():
    standing = retarget_kps(PORTRAIT_KPS, 768, 1024, "standing")
    walking = retarget_kps(PORTRAIT_KPS, 768, 1024, "walking")
    sitting = retarget_kps(PORTRAIT_KPS, 768, 1024, "sitting")
    assert sitting[:, 1].mean() > standing[:, 1].mean() + 50
    np.testing.assert_allclose(walking, standing)


def test_head_scale_scales_distances_linearly():
    small = retarget_kps(PORTRAIT_KPS, 768, 1024, "standing", head_scale=0.08)
    large = retarget_kps(PORTRAIT_KPS, 768, 1024, "standing", head_scale=0.16)
    d_small = np.linalg.norm(small[:, None] - small[None], axis=-1)
    d_large = np.linalg.norm(large[:, None] - large[None], axis=-1)
    np.testing.assert_allclose(d_large, 2 * d_small, rtol=1e-4)


def test_output_does_not_depend_on_source_position_or_size():
    a = retarget_kps(PORTRAIT_KPS, 768, 1024, "standing")
    b = retarget_kps(PORTRAIT_KPS * 3 + 500, 768, 1024, "standing")
    np.testing.assert_allclose(a, b, atol=1e-3)


def test_head_size_follows_frame_height():
    out = retarget_kps(PORTRAIT_KPS, 768, 1024, "standing")
    # eye distance of a frontal face is about a quarter of the head height
    eye_distance = float(np.linalg.norm(out[1] - out[0]))
    head_px = DEFAULT_HEAD_SCALE * 1024
    assert 0.2 * head_px < eye_distance < 0.4 * head_px


def test_retarget_rejects_bad_input():
    with pytest.raises(ValueError):
        retarget_kps(PORTRAIT_KPS, 768, 1024, "jumping")
    with pytest.raises(ValueError):
        retarget_kps(np.zeros((5, 2)), 768, 1024, "standing")
    with pytest.raises(ValueError):
        retarget_kps(PORTRAIT_KPS, 768, 1024, "standing", head_scale=0)


def test_retargeted_points_draw_inside_the_frame():
    out = retarget_kps(PORTRAIT_KPS, 768, 1024, "sitting")
    image = draw_kps(768, 1024, out)
    for (x, y), colour in zip(out, KPS_COLORS):
        assert rgb(image, x, y) == colour
