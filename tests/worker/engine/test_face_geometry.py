"""The face stages' pure geometry: crop box, feathered mask, paste, keypoints in the crop, the face
box in the layout."""

from __future__ import annotations

import numpy as np
import pytest

from worker.engine.face_geometry import (
    feather_mask,
    kps_in_crop,
    layout_face_box,
    paste_feathered,
    region_mask,
    square_crop_box,
)
from worker.face.keypoints import retarget_kps

PORTRAIT_KPS = np.array([[180, 200], [280, 200], [230, 260], [190, 320], [270, 320]], dtype=np.float32)
PORTRAIT_BOX = np.array([130, 110, 330, 380], dtype=np.float32)


def test_crop_is_square_centred_and_margin_times_the_longer_side():
    x0, y0, x1, y1 = square_crop_box([100, 40, 140, 90], (256, 384))
    assert x1 - x0 == y1 - y0 == 80            # 1.6 × 50
    assert ((x0 + x1) / 2, (y0 + y1) / 2) == (120, 65)


@pytest.mark.parametrize("bbox", [[0, 0, 30, 30], [230, 350, 256, 384], [-10, 100, 20, 130]])
def test_crop_near_an_edge_moves_inside_without_shrinking(bbox):
    x0, y0, x1, y1 = square_crop_box(bbox, (256, 384))
    side = round(1.6 * max(bbox[2] - bbox[0], bbox[3] - bbox[1]))
    assert x1 - x0 == y1 - y0 == side
    assert 0 <= x0 and 0 <= y0 and x1 <= 256 and y1 <= 384


def test_crop_larger_than_the_image_shrinks_to_it():
    x0, y0, x1, y1 = square_crop_box([10, 10, 190, 110], (200, 120))
    assert (x1 - x0, y1 - y0) == (120, 120) and 0 <= x0 and x1 <= 200


def test_empty_face_box_is_refused():
    with pytest.raises(ValueError):
        square_crop_box([50, 50, 50, 80], (100, 100))


@pytest.mark.parametrize("side", [24, 64, 155, 512])
def test_feather_is_zero_on_the_border_one_in_the_middle_and_monotone(side):
    m = feather_mask(side)
    assert m.shape == (side, side) and m.dtype == np.float32
    assert np.all(m[0, :] == 0) and np.all(m[-1, :] == 0) and np.all(m[:, 0] == 0) and np.all(m[:, -1] == 0)
    assert m[side // 2, side // 2] == pytest.approx(1.0, abs=1e-5)
    row = m[side // 2, : side // 2]
    assert np.all(np.diff(row) >= -1e-6), "the weight rises from the edge towards the middle"
    # a real feather, not a hard step: several intermediate values along the way
    assert np.count_nonzero((row > 0.02) & (row < 0.98)) >= 2


def test_paste_changes_only_where_the_mask_is_positive():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(120, 100, 3), dtype=np.uint8)
    box = (20, 30, 84, 94)
    patch = np.full((64, 64, 3), 255, dtype=np.uint8)
    mask = feather_mask(64)
    out = paste_feathered(base, patch, box, mask)
    weight = np.zeros(base.shape[:2], dtype=np.float32)
    weight[30:94, 20:84] = mask
    assert np.array_equal(out[weight == 0], base[weight == 0])
    centre = out[62, 52]
    assert np.array_equal(centre, [255, 255, 255])
    assert out.dtype == np.uint8 and out.shape == base.shape


def test_paste_refuses_mismatched_sizes():
    with pytest.raises(ValueError):
        paste_feathered(np.zeros((50, 50, 3), np.uint8), np.zeros((20, 20, 3), np.uint8), (0, 0, 30, 30),
                        feather_mask(30))


def test_kps_in_crop_scale_to_the_working_size():
    out = kps_in_crop([[90, 50], [110, 50]], (80, 40, 120, 80), 1024)
    assert np.allclose(out, [[256, 256], [768, 256]])


@pytest.mark.parametrize("pose", ["standing", "sitting"])
def test_layout_face_box_follows_the_retargeted_keypoints(pose):
    kps = retarget_kps(PORTRAIT_KPS, 832, 1216, pose)
    x1, y1, x2, y2 = layout_face_box(PORTRAIT_KPS, PORTRAIT_BOX, kps, (832, 1216), margin=1.0)
    scale = (x2 - x1) / 200
    assert (y2 - y1) / 270 == pytest.approx(scale, rel=1e-4), "one uniform scale, like retarget_kps"
    assert np.all((kps[:, 0] > x1) & (kps[:, 0] < x2) & (kps[:, 1] > y1) & (kps[:, 1] < y2))
    # the nose sits where it sat in the photo's box, relatively
    assert (kps[2, 0] - x1) / (x2 - x1) == pytest.approx((230 - 130) / 200, abs=1e-3)
    grown = layout_face_box(PORTRAIT_KPS, PORTRAIT_BOX, kps, (832, 1216), margin=1.5)
    assert grown[2] - grown[0] == pytest.approx(1.5 * (x2 - x1), rel=1e-4)


def test_layout_face_box_is_clipped_to_the_frame_and_the_mask_covers_it():
    kps = retarget_kps(PORTRAIT_KPS, 128, 192, "standing")
    box = layout_face_box(PORTRAIT_KPS, PORTRAIT_BOX + [-3000, -3000, 3000, 3000], kps, (128, 192))
    assert box[0] == 0 and box[1] == 0 and box[2] == 128 and box[3] <= 192
    mask = region_mask((128, 192), (10.5, 20.2, 30.0, 41.0))
    assert mask.shape == (192, 128)
    assert mask[20:41, 10:30].min() == 1 and mask.sum() == 21 * 20
