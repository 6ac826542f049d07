"""The pose ControlNet's condition: a canned OpenPose body skeleton for ``standing``, ``walking``
or ``sitting``, scaled and placed so its head is the retargeted face of the IdentityNet condition.

A template is written in head heights (crown to chin), x to the image's right, y down, with the
nose at the origin; the figure faces the camera, so the person's right side is on the image's
left. ``pose_points`` turns a template into pixels: the face's keypoints (InstantID's five, as
``retarget_kps`` placed them) give the head size (their spread, ``KPS_SPREAD_PER_HEAD``), the
nose and the eyes, so the skeleton's head lands exactly on the face IdentityNet draws.

``draw_pose`` draws the 18 points the way OpenPose renders its body model, which is what SDXL
OpenPose ControlNets were trained on: black background, each limb a filled ellipse in its
conventional colour at 60% over the canvas, each joint a dot in its colour.

Example::

    kps = retarget_kps(face.kps, 832, 1216, "walking")
    condition = draw_pose(832, 1216, pose_points("walking", kps))
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from numpy.typing import ArrayLike
from PIL import Image

from worker.face.keypoints import KPS_SPREAD_PER_HEAD, kps_spread

# OpenPose's body order (COCO-18): the template rows and the drawing use it.
JOINTS = ("nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
          "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear")
_J = {name: i for i, name in enumerate(JOINTS)}
# Limbs as OpenPose draws them, in its order; each takes the colour of its index.
LIMBS = (("neck", "r_shoulder"), ("neck", "l_shoulder"), ("r_shoulder", "r_elbow"), ("r_elbow", "r_wrist"),
         ("l_shoulder", "l_elbow"), ("l_elbow", "l_wrist"), ("neck", "r_hip"), ("r_hip", "r_knee"),
         ("r_knee", "r_ankle"), ("neck", "l_hip"), ("l_hip", "l_knee"), ("l_knee", "l_ankle"),
         ("neck", "nose"), ("nose", "r_eye"), ("r_eye", "r_ear"), ("nose", "l_eye"), ("l_eye", "l_ear"))
# The conventional palette: hue steps from red round to magenta, one per joint / limb.
COLORS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
          (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
          (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))

# Body joints in head heights from the nose (eyes and ears come from the face itself). An adult
# of 7.5 heads: shoulders 1.9 heads wide at 1.1 below the nose, hips at 3.6, knees 5.2, ankles
# 6.8 (FIGURE_HEADS in worker.face.keypoints). Sitting folds the thighs toward the camera: the
# knees show just below and outside the hips, the shins hang to the floor.
_BODY = ("neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
         "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle")
TEMPLATES: dict[str, tuple[tuple[float, float], ...]] = {
    "standing": ((0, 0.95), (-0.85, 1.15), (-1.0, 2.45), (-1.05, 3.6), (0.85, 1.15), (1.0, 2.45), (1.05, 3.6),
                 (-0.5, 3.6), (-0.55, 5.2), (-0.55, 6.8), (0.5, 3.6), (0.55, 5.2), (0.55, 6.8)),
    "walking": ((0, 0.95), (-0.85, 1.15), (-0.85, 2.4), (-0.55, 3.5), (0.85, 1.15), (1.1, 2.4), (1.35, 3.35),
                (-0.5, 3.6), (-0.35, 5.15), (-0.7, 6.75), (0.5, 3.6), (0.65, 5.25), (0.8, 6.6)),
    "sitting": ((0, 0.95), (-0.85, 1.15), (-1.0, 2.4), (-0.7, 3.4), (0.85, 1.15), (1.0, 2.4), (0.7, 3.4),
                (-0.5, 3.55), (-0.7, 4.1), (-0.7, 5.3), (0.5, 3.55), (0.7, 4.1), (0.7, 5.3)),
}
# Limb half-width in pixels per 512 px of the frame's short side: OpenPose's stock renderer. The
# pinned checkpoint's model card says its training skeletons were drawn with thicker lines; without
# its weights here this was not tuned against it, and this constant is the one to raise.
STICK_PER_512 = 4
EAR_OUT = 0.22  # each ear this many head heights outside its eye, at eye level


def pose_points(pose: str, kps: ArrayLike) -> np.ndarray:
    """The 18 OpenPose joints in pixels for ``pose``, its head on the five face keypoints
    ``kps`` (image-left eye, image-right eye, nose, mouth corners). Returns float32 (18, 2).

    Example::

        pose_points("standing", retarget_kps(face.kps, 832, 1216, "standing"))
    """
    if pose not in TEMPLATES:
        raise ValueError(f"pose must be one of {sorted(TEMPLATES)}, got {pose!r}")
    face = np.asarray(kps, dtype=np.float64).reshape(5, 2)
    head_px = head_height(face)
    points = np.zeros((len(JOINTS), 2))
    for name, (x, y) in zip(_BODY, TEMPLATES[pose]):
        points[_J[name]] = face[2] + head_px * np.array([x, y])
    return with_head(points, face)


def head_height(kps: ArrayLike) -> float:
    """The head height (crown to chin) in pixels of a face whose five keypoints are ``kps``."""
    spread = kps_spread(kps)
    if spread <= 1e-6:
        raise ValueError("the keypoints coincide; there is no head size to scale the skeleton to")
    return spread / KPS_SPREAD_PER_HEAD


def with_head(points: ArrayLike, kps: ArrayLike) -> np.ndarray:
    """The 18 joints ``points`` with the head's five (nose, eyes, ears) set from the face keypoints
    ``kps``, so the skeleton's head is exactly the face IdentityNet draws. Returns float32 (18, 2)."""
    face = np.asarray(kps, dtype=np.float64).reshape(5, 2)
    head_px = head_height(face)
    points = np.array(points, dtype=np.float64).reshape(len(JOINTS), 2)
    points[_J["nose"]] = face[2]
    # the figure faces the camera: its right eye is the image-left one
    points[_J["r_eye"]], points[_J["l_eye"]] = face[0], face[1]
    points[_J["r_ear"]] = face[0] - head_px * np.array([EAR_OUT, 0.0])
    points[_J["l_ear"]] = face[1] + head_px * np.array([EAR_OUT, 0.0])
    return points.astype(np.float32)


def draw_pose(width: int, height: int, points: ArrayLike) -> Image.Image:
    """Draw 18 joints (``pose_points``, or ``worker.pose.photo_skeleton``'s with NaN for joints a
    photo does not show) on a black ``width``×``height`` RGB canvas as OpenPose renders its body
    model; the stroke width follows the frame (``STICK_PER_512``)."""
    joints = np.asarray(points, dtype=np.float64).reshape(len(JOINTS), 2)
    stick = max(2, round(STICK_PER_512 * min(width, height) / 512))
    limbs = np.zeros((height, width, 3), dtype=np.uint8)
    for index, (a, b) in enumerate(LIMBS):
        start, end = joints[_J[a]], joints[_J[b]]
        if np.isnan(start).any() or np.isnan(end).any():
            continue  # a joint the pose photo does not show: OpenPose leaves its limbs out
        length = float(np.hypot(*(start - end)))
        angle = math.degrees(math.atan2(start[1] - end[1], start[0] - end[0]))
        centre = (int(round((start[0] + end[0]) / 2)), int(round((start[1] + end[1]) / 2)))
        polygon = cv2.ellipse2Poly(centre, (max(1, int(length / 2)), stick), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(limbs, polygon, COLORS[index])
    canvas = (limbs.astype(np.float64) * 0.6).astype(np.uint8)
    for index, (x, y) in enumerate(joints):
        if np.isnan(x) or np.isnan(y):
            continue
        cv2.circle(canvas, (int(round(x)), int(round(y))), stick, COLORS[index], -1)
    return Image.fromarray(canvas)
