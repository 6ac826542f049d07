"""Several photos of one person combined into one face: the mean identity, the keypoints photo,
the same-person check; unit tests of the rules, then dlib's real recognizer on real photos
(tests/face_photos.py), which is also where the tiny profile's default threshold was measured."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image

from shared.errors import ErrorCode, IdentityBodyError
from tests.face_photos import stranger, tom, tom_again
from worker.face.analysis import FaceInfo
from worker.face.combined_face import (
    analyze_photos,
    check_same_person,
    combine_embeddings,
    frontality,
    pairwise_distances,
    pick_keypoints_photo,
)

FRONTAL = np.array([[40, 50], [80, 50], [60, 70], [45, 90], [75, 90]], np.float32)
# the same face turned: the nose tip moved towards the image-right eye and mouth corner
TURNED = np.array([[40, 50], [80, 50], [74, 70], [45, 90], [75, 90]], np.float32)


def face(kps=FRONTAL, side: float = 200.0, embedding=None) -> FaceInfo:
    return FaceInfo(embedding=np.asarray(embedding if embedding is not None else np.ones(4), np.float32),
                    kps=np.asarray(kps, np.float32), bbox=np.array([0, 0, side, side], np.float32),
                    det_score=0.9, face_count=1, image_size=(512, 512))


def test_frontality_is_one_for_a_symmetric_face_and_falls_as_the_head_turns():
    assert frontality(FRONTAL) == pytest.approx(1.0)
    assert frontality(TURNED) < 0.6
    assert frontality(FRONTAL[:, ::-1] * [1, 1]) == pytest.approx(1.0)  # rotated 90°: tilt is not a turn
    assert frontality(np.array(TURNED) * 3) == pytest.approx(frontality(TURNED))  # size does not count


def test_the_keypoints_come_from_the_largest_most_frontal_face():
    assert pick_keypoints_photo([face(side=100), face(side=300)]) == 1          # larger wins
    assert pick_keypoints_photo([face(TURNED, side=220), face(side=200)]) == 1  # frontal beats slightly larger
    assert pick_keypoints_photo([face(TURNED, side=900), face(side=200)]) == 0  # much larger beats frontal
    assert pick_keypoints_photo([face(), face()]) == 0                          # the first of equals


def test_combined_embedding_is_the_normalised_mean_at_the_mean_length():
    a, b = np.array([3.0, 0, 0, 0]), np.array([0, 10.0, 0, 0])
    combined = combine_embeddings([a, b])
    assert combined.dtype == np.float32
    # each normalised first: the longer one does not pull the direction towards itself
    np.testing.assert_allclose(combined / np.linalg.norm(combined), [2 ** -0.5, 2 ** -0.5, 0, 0], rtol=1e-6)
    assert np.linalg.norm(combined) == pytest.approx(6.5)
    np.testing.assert_allclose(combine_embeddings([a]), a)


def test_same_person_check_names_the_photo_apart_from_the_others():
    near = [np.array([1.0, 0.01 * i, 0, 0]) for i in range(3)]
    far = np.array([0, 0, 1.0, 0])
    assert check_same_person([face(embedding=e) for e in near], 0.1) < 0.001
    with pytest.raises(IdentityBodyError) as refused:
        check_same_person([face(embedding=e) for e in (near[0], far, near[1])], 0.1)
    assert refused.value.code is ErrorCode.FACES_DIFFER and refused.value.field == "face_image[2]"
    assert refused.value.message.startswith("Photo 2 of 3 does not show the same person")
    with pytest.raises(IdentityBodyError) as two:
        check_same_person([face(embedding=near[0]), face(embedding=far)], 0.1)
    assert two.value.field == "face_image" and "Photos 1 and 2" in two.value.message


class Recorded:
    """An analyzer answering from a list (the real one is exercised below)."""

    faces_differ_distance = 0.1

    def __init__(self, answers):
        self.answers = list(answers)

    def analyze(self, image):
        answer = self.answers.pop(0)
        if isinstance(answer, IdentityBodyError):
            raise answer
        return answer


def test_one_photo_is_used_exactly_as_analysed():
    only = face(TURNED, embedding=[5.0, 1.0, 0, 0])
    combined = analyze_photos(Recorded([only]), [Image.new("RGB", (8, 8))])
    assert combined.face is only and combined.keypoints_from == 0 and combined.max_distance is None


def test_a_photo_without_a_face_is_named():
    missing = IdentityBodyError(ErrorCode.NO_FACE_DETECTED, "No face was found in the photo.", field="face_image")
    with pytest.raises(IdentityBodyError) as refused:
        analyze_photos(Recorded([face(), missing, face()]), [Image.new("RGB", (8, 8))] * 3)
    assert refused.value.code is ErrorCode.NO_FACE_DETECTED and refused.value.field == "face_image[2]"
    assert refused.value.message == "Photo 2 of 3: No face was found in the photo."
    with pytest.raises(IdentityBodyError) as alone:  # one photo: the one-photo error, unchanged
        analyze_photos(Recorded([missing]), [Image.new("RGB", (8, 8))])
    assert alone.value is missing


# --- dlib's recognizer on real photos ------------------------------------------------------------
@pytest.fixture(scope="module")
def analyzer():
    pytest.importorskip("dlib")
    from worker.face.dlib_analyzer import DlibFaceAnalyzer

    found = DlibFaceAnalyzer(min_face_px=128)
    found.load()
    return found


def test_dlib_threshold_separates_one_person_from_others(analyzer):
    """The tiny profile's default: copies of one face well under it, every pair of different
    people (Tom Hanks and t1.jpg's six) well over it."""
    same = [analyzer.analyze(p).embedding for p in (tom(), tom_again(), tom(384))]
    others = [analyzer.analyze(stranger(i)).embedding for i in range(6)]
    same_d = pairwise_distances(same)
    apart = pairwise_distances([same[0], *others])
    largest_same = max(same_d[i, j] for i, j in itertools.combinations(range(3), 2))
    smallest_apart = min(apart[i, j] for i, j in itertools.combinations(range(7), 2))
    print(f"\ndlib cosine distances: one person up to {largest_same:.4f}, different people from {smallest_apart:.4f}")
    assert largest_same < analyzer.faces_differ_distance < smallest_apart


def test_two_photos_of_one_person_combine_and_a_stranger_is_refused(analyzer):
    first, second = analyzer.analyze(tom()), analyzer.analyze(tom_again())
    combined = analyze_photos(analyzer, [tom(), tom_again()])
    assert combined.max_distance < analyzer.faces_differ_distance
    assert not np.allclose(combined.face.embedding, first.embedding)  # both photos count
    np.testing.assert_allclose(combined.face.embedding, combine_embeddings([first.embedding, second.embedding]))
    np.testing.assert_array_equal(combined.face.kps, combined.photos[combined.keypoints_from].kps)
    with pytest.raises(IdentityBodyError) as refused:
        analyze_photos(analyzer, [tom(), stranger()])
    assert refused.value.code is ErrorCode.FACES_DIFFER
    # the threshold is a setting: a looser one lets the pair through
    assert analyze_photos(analyzer, [tom(), stranger()], max_distance=0.5).max_distance > 0.085
