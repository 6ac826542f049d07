"""The identity judge: dlib's recognizer, independent of antelopev2 on the instantid profile and
the same recognizer (said so) on the tiny one; real photos."""

from __future__ import annotations

import pytest
from PIL import Image

from tests.face_photos import T1_FACES, t1, tom
from worker.face.dlib_analyzer import DlibFaceAnalyzer
from worker.face.judge import DLIB_JUDGE, identity_judge

pytest.importorskip("dlib")


class ConditioningRecognizer:
    """Stands for antelopev2 (not installed here): any analyzer that is not dlib's."""

    def largest_face(self, image):  # pragma: no cover - the judge must never ask it
        raise AssertionError("the independent judge used the conditioning recognizer")


@pytest.fixture(scope="module")
def dlib() -> DlibFaceAnalyzer:
    analyzer = DlibFaceAnalyzer(min_face_px=64)
    analyzer.load()
    return analyzer


def test_instantid_judge_is_dlib_and_independent_of_the_conditioning_recognizer():
    judge = identity_judge(ConditioningRecognizer())
    assert judge.describe() == {"identity_judge": DLIB_JUDGE, "identity_judge_independent": True}
    assert isinstance(judge.analyzer, DlibFaceAnalyzer)
    # its reference comes from its own reading of the upload, not the conditioning embedding
    reference = judge.reference(tom(), conditioning_face=None)
    scores = judge.score(reference, [tom(), t1().crop(T1_FACES[0]).resize((300, 300)), Image.new("RGB", (200, 200))])
    assert scores[0].identity_score > 0.99 and scores[0].face_found
    assert scores[1].face_found and scores[1].identity_score < scores[0].identity_score - 0.05
    assert scores[2].identity_score is None and scores[2].face_found is False


def test_tiny_judge_is_the_analysing_recognizer_and_says_so(dlib):
    judge = identity_judge(dlib)
    assert judge.analyzer is dlib
    assert judge.describe() == {"identity_judge": DLIB_JUDGE, "identity_judge_independent": False}
    face = dlib.analyze(tom())
    assert judge.reference(tom(), face) is face.embedding


def test_no_face_in_the_upload_for_the_judge_scores_every_image_none():
    judge = identity_judge(ConditioningRecognizer())
    reference = judge.reference(Image.new("RGB", (256, 256), (120, 120, 120)), conditioning_face=None)
    assert reference is None
    assert [(s.identity_score, s.face_found) for s in judge.score(reference, [tom(), tom()])] == [(None, False)] * 2
