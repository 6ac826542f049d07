"""A pose photo's body as the pose ControlNet's condition: BlazePose's 33 landmarks mapped to the
18 OpenPose joints (COCO-18) the ControlNet was trained on, the figure fitted into the output
frame, and this person's head (the five face keypoints IdentityNet draws) put where the photo's
head is, at the photo's head size.

A joint the photo does not show (BlazePose's visibility or presence under ``MIN_SCORE``: legs out
of the photo, an arm behind the body) is NaN and ``draw_pose`` leaves it and its limbs out, as OpenPose does.

Example::

    layout = photo_layout(detector.detect(photo), face.kps, 832, 1216)
    draw_kps(832, 1216, layout.kps)            # IdentityNet's condition
    draw_pose(832, 1216, layout.joints)        # the pose ControlNet's
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from worker.engine.pose_skeleton import JOINTS, head_height, with_head
from worker.face.keypoints import KPS_CENTRE_BELOW_CROWN, kps_spread, place_kps
from worker.pose.blazepose import BodyPose

# The BlazePose landmark of each OpenPose joint; the neck, which BlazePose lacks, is the
# shoulders' midpoint. Both name sides from the person's point of view.
BLAZEPOSE_INDEX = {
    "nose": 0, "r_eye": 5, "l_eye": 2, "r_ear": 8, "l_ear": 7,
    "r_shoulder": 12, "r_elbow": 14, "r_wrist": 16, "l_shoulder": 11, "l_elbow": 13, "l_wrist": 15,
    "r_hip": 24, "r_knee": 26, "r_ankle": 28, "l_hip": 23, "l_knee": 25, "l_ankle": 27,
}
# BlazePose's eye centres, nose and mouth corners in the order of the five face keypoints (for a
# person facing the camera, their right eye and mouth corner are on the image's left)
FACE_FIVE = (5, 2, 0, 10, 9)
MIN_SCORE = 0.5
# the figure spans at most this share of the frame's width and height, as the templates do
FILL = 0.9


@dataclass(frozen=True)
class PhotoLayout:
    kps: np.ndarray      # float32 (5, 2): this person's face keypoints in the frame
    joints: np.ndarray   # float32 (18, 2): OpenPose joints in the frame, NaN where the photo shows none


def openpose_joints(body: BodyPose, min_score: float = MIN_SCORE) -> np.ndarray:
    """BlazePose's 33 landmarks → the 18 OpenPose joints, NaN where the photo does not show the
    landmark (its visibility or its presence under ``min_score``; the neck needs both
    shoulders). Returns float32 (18, 2).

    Example::

        openpose_joints(detector.detect(photo))[JOINTS.index("neck")]
    """
    points = np.asarray(body.points, dtype=np.float64).reshape(-1, 2)
    seen = (np.asarray(body.visibility) >= min_score) & (np.asarray(body.presence) >= min_score)
    joints = np.full((len(JOINTS), 2), np.nan)
    for name, index in BLAZEPOSE_INDEX.items():
        if seen[index]:
            joints[JOINTS.index(name)] = points[index]
    shoulders = [BLAZEPOSE_INDEX["r_shoulder"], BLAZEPOSE_INDEX["l_shoulder"]]
    if seen[shoulders].all():
        joints[JOINTS.index("neck")] = points[shoulders].mean(axis=0)
    return joints.astype(np.float32)


def photo_layout(body: BodyPose, face_kps: ArrayLike, width: int, height: int) -> PhotoLayout:
    """Fit the photo's figure (its visible joints and its head up to the crown) into the
    ``width``×``height`` frame, centred, one uniform scale; then place ``face_kps`` (the upload's
    five keypoints, shape kept) on the photo's face at its size, and give the skeleton that head."""
    joints = openpose_joints(body)
    face = np.asarray(body.points, dtype=np.float64)[list(FACE_FIVE)]
    crown = face.mean(axis=0) - [0.0, KPS_CENTRE_BELOW_CROWN * head_height(face)]
    shown = joints[~np.isnan(joints).any(axis=1)]
    extent = np.vstack([shown, face, crown])
    low, high = extent.min(axis=0), extent.max(axis=0)
    size = np.maximum(high - low, 1.0)
    scale = min(FILL * width / size[0], FILL * height / size[1])
    offset = np.array([width / 2, height / 2]) - (low + high) / 2 * scale
    face_in_frame = face * scale + offset
    kps = place_kps(face_kps, face_in_frame.mean(axis=0), kps_spread(face_in_frame))
    return PhotoLayout(kps=kps, joints=with_head(joints * scale + offset, kps))
