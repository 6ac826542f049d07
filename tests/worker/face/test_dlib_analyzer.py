"""The tiny profile's real face analyzer (dlib's trained detector, landmarks and recognizer) on
the photos that ship inside the insightface wheel."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from shared.errors import ErrorCode, IdentityBodyError
from tests.face_photos import T1_FACES, iou, t1, tom
from worker.face.dlib_analyzer import DlibFaceAnalyzer, embedding_projection, five_keypoints

pytest.importorskip("dlib")

# Tom Hanks' photo is insightface's 112 px aligned crop: its five points were fitted (least squares,
# similarity transform) onto the ArcFace alignment targets, so each sits near its target; his head
# is turned a little, which moves the nose tip most.
TOM_KPS_112 = np.array([[38.3, 51.7], [73.5, 51.5], [56.0, 71.7], [41.5, 92.4], [70.7, 92.2]])


@pytest.fixture(scope="module")
def analyzer() -> DlibFaceAnalyzer:
    face = DlibFaceAnalyzer(min_face_px=128)
    face.load()
    return face


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_tom_hanks_one_face_with_a_512_embedding(analyzer):
    info = analyzer.analyze(tom())
    assert info.face_count == 1
    assert info.embedding.shape == (512,) and info.embedding.dtype == np.float32
    assert 10 < float(np.linalg.norm(info.embedding)) < 40  # of the order of antelopev2's raw norms
    assert info.kps.shape == (5, 2) and info.bbox.shape == (4,)
    assert 0.5 < info.det_score < 1.0
    assert info.image_size == (448, 448)


@pytest.mark.parametrize("size", [224, 448, 896])
def test_keypoints_in_insightface_order_on_his_features(analyzer, size):
    info = analyzer.analyze(tom(size))
    found = info.kps * 112 / size
    # within 12 px of 112 (a third of the distance between the eyes) of every target, and
    # the order: eye on the left, other eye, nose below the eyes, mouth corners below the nose
    assert np.all(np.linalg.norm(found - TOM_KPS_112, axis=1) < 12), found.round(1)
    assert found[0, 0] < found[1, 0] and found[3, 0] < found[4, 0]
    assert found[:2, 1].max() < found[2, 1] < found[3:, 1].min()


def test_five_keypoints_from_the_68_point_scheme():
    points = np.zeros((68, 2), np.float32)
    points[36:42] = [10, 20]
    points[42:48] = [30, 20]
    points[30], points[48], points[54] = [20, 30], [12, 40], [28, 40]
    np.testing.assert_array_equal(five_keypoints(points), [[10, 20], [30, 20], [20, 30], [12, 40], [28, 40]])


def test_projection_keeps_cosines_and_is_fixed():
    p = embedding_projection()
    assert p.shape == (512, 128)
    np.testing.assert_allclose(p.T @ p / (p[:, 0] @ p[:, 0]), np.eye(128), atol=1e-5)
    np.testing.assert_array_equal(p, embedding_projection())
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(128), rng.standard_normal(128)
    assert cosine(p @ a, p @ b) == pytest.approx(cosine(a, b), abs=1e-5)


def test_finds_the_six_people_of_the_group_photo(analyzer):
    faces = analyzer.detect(t1())
    assert len(faces) == 6
    for face in faces:
        assert max(iou(face.bbox, truth) for truth in T1_FACES) > 0.4, face.bbox
    areas = [float((f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1])) for f in faces]
    assert areas == sorted(areas, reverse=True)
    assert all(f.face_count == 6 and f.image_size == (1280, 886) for f in faces)


def test_same_face_scores_near_one_other_people_clearly_lower(analyzer):
    reference = analyzer.analyze(tom(448)).embedding
    resized = analyzer.largest_face(tom(224)).embedding
    assert cosine(reference, resized) > 0.99
    others = [cosine(reference, f.embedding) for f in analyzer.detect(t1())]
    assert max(others) < cosine(reference, resized) - 0.08, others


@pytest.mark.parametrize("colour", [(0, 0, 0), (128, 128, 128), (250, 240, 230)])
def test_uniform_image_has_no_face(analyzer, colour):
    blank = Image.new("RGB", (640, 480), colour)
    assert analyzer.largest_face(blank) is None
    with pytest.raises(IdentityBodyError) as err:
        analyzer.analyze(blank)
    assert err.value.code == ErrorCode.NO_FACE_DETECTED and "128 px" in err.value.message


def test_small_face_is_rejected_with_its_size_but_still_found_in_outputs(analyzer):
    with pytest.raises(IdentityBodyError) as err:
        analyzer.analyze(tom(112))
    assert err.value.code == ErrorCode.FACE_TOO_SMALL
    measured = err.value.details["face_px"]
    assert measured < 128 and f"{measured} px" in err.value.message
    assert analyzer.largest_face(tom(112)) is not None  # scoring outputs has no size floor


def test_large_upload_is_detected_on_a_fitted_copy(analyzer):
    big = tom(1600)
    info = analyzer.analyze(big)
    assert info.image_size == (1600, 1600)
    small = analyzer.analyze(tom(400))
    np.testing.assert_allclose(info.kps / 4, small.kps, atol=4)
    assert cosine(info.embedding, small.embedding) > 0.99


def test_exif_rotated_upload_is_analysed_upright(analyzer):
    upright = tom()
    expected = analyzer.analyze(upright)
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a sideways camera writes
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    buffer = io.BytesIO()
    stored.save(buffer, format="PNG", exif=exif.tobytes())
    info = analyzer.analyze(Image.open(io.BytesIO(buffer.getvalue())))
    np.testing.assert_allclose(info.kps, expected.kps, atol=1.0)
    assert info.image_size == upright.size
