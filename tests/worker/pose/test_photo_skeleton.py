"""BlazePose's landmarks as the OpenPose skeleton (pure: landmarks made by hand), and the layout
that fits a photo's figure into the frame with this person's head where the photo's head is."""

from __future__ import annotations

import numpy as np

from tests.pipeline_inputs import PORTRAIT_KPS
from worker.engine.pose_skeleton import COLORS, JOINTS, draw_pose
from worker.face.keypoints import KPS_CENTRE_BELOW_CROWN, KPS_SPREAD_PER_HEAD, kps_spread
from worker.pose.blazepose import BodyPose
from worker.pose.photo_skeleton import (
    BLAZEPOSE_INDEX,
    FACE_FIVE,
    FILL,
    openpose_joints,
    photo_layout,
)

J = {name: i for i, name in enumerate(JOINTS)}


def standing_body(hidden: tuple[int, ...] = (), outside: tuple[int, ...] = ()) -> BodyPose:
    """A person facing the camera in a 400×800 photo, arms out to the sides: BlazePose's 33
    landmarks, each (but ``hidden`` / ``outside``) seen."""
    points = np.zeros((33, 2))
    points[[0, 2, 5, 7, 8, 9, 10]] = [(200, 100), (212, 90), (188, 90), (225, 95), (175, 95), (208, 115), (192, 115)]
    points[[11, 12, 13, 14, 15, 16]] = [(250, 170), (150, 170), (320, 170), (80, 170), (380, 170), (20, 170)]
    points[[23, 24, 25, 26, 27, 28]] = [(230, 400), (170, 400), (235, 560), (165, 560), (240, 720), (160, 720)]
    visibility, presence = np.full(33, 0.95), np.full(33, 0.95)
    visibility[list(hidden)] = 0.1
    presence[list(outside)] = 0.1
    return BodyPose(points=points.astype(np.float32), visibility=visibility, presence=presence, score=0.9)


def test_each_openpose_joint_is_the_same_body_part_and_the_neck_is_between_the_shoulders():
    body = standing_body()
    joints = openpose_joints(body)
    for name, index in BLAZEPOSE_INDEX.items():
        assert np.allclose(joints[J[name]], body.points[index]), name
    assert np.allclose(joints[J["neck"]], (200, 170))
    # the person's right is the image's left when they face the camera, in both skeletons
    assert joints[J["r_wrist"], 0] < joints[J["neck"], 0] < joints[J["l_wrist"], 0]
    assert joints[J["r_hip"], 0] < joints[J["l_hip"], 0]


def test_joints_the_photo_does_not_show_are_left_out():
    # the right wrist hidden behind the body, the ankles below the photo's edge
    joints = openpose_joints(standing_body(hidden=(16,), outside=(27, 28)))
    missing = {name for name in JOINTS if np.isnan(joints[J[name]]).any()}
    assert missing == {"r_wrist", "l_ankle", "r_ankle"}
    # one shoulder unseen: no neck either
    assert np.isnan(openpose_joints(standing_body(hidden=(11,)))[J["neck"]]).all()


def test_the_figure_fills_the_frame_centred_and_keeps_its_shape():
    # a tall frame: the figure's width (wrist to wrist) is what limits its scale
    layout = photo_layout(standing_body(), PORTRAIT_KPS, 512, 1216)
    joints = layout.joints
    assert joints.shape == (18, 2) and not np.isnan(joints).any()
    body = np.vstack([joints, layout.kps])
    assert (body >= 0).all() and (body[:, 0] <= 512).all() and (body[:, 1] <= 1216).all()
    # the wrists span FILL of the width: 360 px of photo became 0.9 * 512
    span = joints[J["l_wrist"], 0] - joints[J["r_wrist"], 0]
    assert abs(span - FILL * 512) < 1.0
    assert abs((joints[J["l_wrist"], 0] + joints[J["r_wrist"], 0]) / 2 - 256) < 1.0
    # one uniform scale: the hips-to-ankles line is as long, relative to the shoulders, as in the photo
    scale = span / 360
    assert np.isclose(joints[J["r_ankle"], 1] - joints[J["r_hip"], 1], 320 * scale, atol=0.5)
    # centred vertically too: as much room above the crown as below the ankles
    crown = layout.kps.mean(axis=0)[1] - KPS_CENTRE_BELOW_CROWN * kps_spread(layout.kps) / KPS_SPREAD_PER_HEAD
    assert abs((crown + joints[J["r_ankle"], 1]) / 2 - 1216 / 2) < 1.0


def test_this_persons_head_goes_where_the_photos_head_is_at_its_size():
    body = standing_body()
    layout = photo_layout(body, PORTRAIT_KPS, 512, 768)
    photo_face = body.points[list(FACE_FIVE)].astype(np.float64)
    scale = (layout.joints[J["l_wrist"], 0] - layout.joints[J["r_wrist"], 0]) / 360
    # the keypoints' centre is the photo's face centre and their spread the photo face's, in the frame
    centre = layout.joints[J["neck"]] + (photo_face.mean(axis=0) - (200, 170)) * scale
    assert np.allclose(layout.kps.mean(axis=0), centre, atol=0.5)
    assert np.isclose(kps_spread(layout.kps), kps_spread(photo_face) * scale, rtol=1e-3)
    # the upload's own face shape is kept (a similarity: ratios of distances unchanged)
    def ratio(k):
        return np.hypot(*(k[0] - k[1])) / np.hypot(*(k[2] - k[3]))

    assert np.isclose(ratio(layout.kps), ratio(np.asarray(PORTRAIT_KPS, dtype=np.float64)), rtol=1e-3)
    # and the skeleton's head is that face, as for the templates
    assert np.allclose(layout.joints[J["nose"]], layout.kps[2])
    assert np.allclose(layout.joints[J["r_eye"]], layout.kps[0]) and np.allclose(layout.joints[J["l_eye"]], layout.kps[1])


def test_a_joint_left_out_is_not_drawn_nor_its_limbs():
    layout = photo_layout(standing_body(outside=(27, 28)), PORTRAIT_KPS, 512, 768)
    image = np.asarray(draw_pose(512, 768, layout.joints))
    shown = {tuple(int(v) for v in c) for c in image.reshape(-1, 3)}
    assert COLORS[J["r_knee"]] in shown and COLORS[J["r_ankle"]] not in shown and COLORS[J["l_ankle"]] not in shown
