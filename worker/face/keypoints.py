"""The IdentityNet conditioning image: five face keypoints drawn the way InstantID was trained on,
and the retargeting that moves a portrait's keypoints to where a head sits in a full-body frame.

Example::

    kps = retarget_kps(face.kps, 768, 1024, "standing")
    control = draw_kps(768, 1024, kps)
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from numpy.typing import ArrayLike
from PIL import Image

# insightface's order: image-left eye, image-right eye, nose tip, image-left / image-right mouth corner.
KPS_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0),
    (0, 255, 0),
    (0, 0, 255),
    (255, 255, 0),
    (255, 0, 255),
)
NOSE = 2
LIMB_HALF_WIDTH = 4
LIMB_DIM = 0.6
POINT_RADIUS = 10

# Head height (crown to chin) as a fraction of the frame height. An adult is about 7.5 heads
# tall; at 0.12 a standing figure fills 90% of the frame.
DEFAULT_HEAD_SCALE = 0.12
# Root-mean-square distance of the five keypoints from their centroid, in head heights, for a
# frontal adult face (eyes ~0.27 head heights apart, mouth ~0.45 eye-distances below the nose).
KPS_SPREAD_PER_HEAD = 0.155
# Where the keypoint centroid (about the nose) sits below the crown, in head heights.
KPS_CENTRE_BELOW_CROWN = 0.62
# Figure height in head heights: sitting on a chair folds the legs, so the figure is shorter and,
# centred in the frame, its head sits lower.
FIGURE_HEADS = {"standing": 7.5, "walking": 7.5, "sitting": 5.5}
TOP_MARGIN = 0.03


def draw_kps(width: int, height: int, kps: ArrayLike) -> Image.Image:
    """Draw keypoints on a black ``width``×``height`` RGB canvas as InstantID does.

    Each non-nose point is joined to the nose by a filled ellipse (half-width 4) in that point's
    colour; the limb layer is dimmed to 60%, then each point is a filled circle of radius 10.

    Example::

        draw_kps(768, 1024, [[370, 120], [400, 120], [385, 135], [372, 150], [398, 150]])
    """
    points = np.asarray(kps, dtype=np.float64).reshape(-1, 2)
    canvas = np.zeros((height, width, 3), dtype=np.float64)
    for i, point in enumerate(points):
        if i == NOSE:
            continue
        _fill_limb(canvas, point, points[NOSE], KPS_COLORS[i])
    canvas = (canvas * LIMB_DIM).astype(np.uint8)
    for i, (x, y) in enumerate(points):
        cv2.circle(canvas, (int(x), int(y)), POINT_RADIUS, KPS_COLORS[i], -1)
    return Image.fromarray(canvas)


def _fill_limb(canvas: np.ndarray, a: np.ndarray, b: np.ndarray, color: tuple[int, int, int]) -> None:
    length = float(np.hypot(*(a - b)))
    angle = math.degrees(math.atan2(a[1] - b[1], a[0] - b[0]))
    centre = (int((a[0] + b[0]) / 2), int((a[1] + b[1]) / 2))
    polygon = cv2.ellipse2Poly(centre, (int(length / 2), LIMB_HALF_WIDTH), int(angle), 0, 360, 1)
    cv2.fillConvexPoly(canvas, polygon, color)


def kps_spread(kps: ArrayLike) -> float:
    """Root-mean-square distance of the keypoints from their centroid: the face's size, in the
    unit ``KPS_SPREAD_PER_HEAD`` relates to head heights."""
    points = np.asarray(kps, dtype=np.float64).reshape(-1, 2)
    return float(np.sqrt(((points - points.mean(axis=0)) ** 2).sum(axis=1).mean()))


def retarget_kps(
    kps: ArrayLike,
    width: int,
    height: int,
    pose: str,
    head_scale: float = DEFAULT_HEAD_SCALE,
) -> np.ndarray:
    """Move a portrait's five keypoints to where the head sits in a full-body ``width``×``height``
    frame for ``pose`` (standing, walking, sitting).

    The face's shape is kept (translation and one uniform scale only, so ratios and angles are
    unchanged). It is scaled so the head spans ``head_scale`` of the frame height (0.12: a
    7.5-head figure fills 90% of it). The figure is centred horizontally and vertically; a
    sitting figure is shorter, so its head sits lower. Returns float32 (5, 2).

    Example::

        retarget_kps(face.kps, 768, 1024, "sitting", head_scale=0.1)
    """
    if pose not in FIGURE_HEADS:
        raise ValueError(f"pose must be one of {sorted(FIGURE_HEADS)}, got {pose!r}")
    if head_scale <= 0:
        raise ValueError("head_scale must be positive")
    head_px = head_scale * height
    figure_px = FIGURE_HEADS[pose] * head_px
    crown_y = max(TOP_MARGIN * height, (height - figure_px) / 2)
    target = np.array([width / 2, crown_y + KPS_CENTRE_BELOW_CROWN * head_px])
    return place_kps(kps, target, KPS_SPREAD_PER_HEAD * head_px)


def place_kps(kps: ArrayLike, centre: ArrayLike, spread: float) -> np.ndarray:
    """Move five keypoints so their centroid is ``centre`` and their spread (``kps_spread``) is
    ``spread``, keeping the face's shape (translation and one uniform scale). Returns float32 (5, 2).

    Example::

        place_kps(face.kps, (416, 180), 12.0)   # the head where a pose photo's head is
    """
    points = np.asarray(kps, dtype=np.float64).reshape(5, 2)
    current = kps_spread(points)
    if current <= 1e-6:
        raise ValueError("the keypoints coincide; there is no face shape to keep")
    return ((points - points.mean(axis=0)) * (spread / current) + np.asarray(centre, dtype=np.float64)).astype(np.float32)
