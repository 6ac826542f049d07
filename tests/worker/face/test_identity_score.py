"""Identity score and re-ranking: pure ranking rules, then the real stage on real photos through the
tiny profile's real analyzer (dlib), then the parameters that drive it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from shared.errors import IdentityBodyError
from shared.params import MAX_CANDIDATES, parse_params
from shared.settings import Settings
from tests.face_photos import t1, tom
from worker.face.dlib_analyzer import DlibFaceAnalyzer
from worker.face.identity_score import ImageScore, cosine_similarity, rank_candidates, score_images
from worker.identity_pipeline import IdentityPipeline

pytest.importorskip("dlib")


@pytest.fixture(scope="module")
def analyzer() -> DlibFaceAnalyzer:
    face = DlibFaceAnalyzer()
    face.load()
    return face


def blank() -> Image.Image:
    return Image.new("RGB", (320, 320), (120, 120, 120))


# --- ranking rules --------------------------------------------------------------------------------


def test_ranking_keeps_the_best_in_order_and_faceless_last():
    scores = [ImageScore(0, 0.2, True), ImageScore(1, None, False), ImageScore(2, 0.9, True),
              ImageScore(3, 0.5, True), ImageScore(4, 0.5, True)]
    assert [s.index for s in rank_candidates(scores, keep=5)] == [2, 3, 4, 0, 1]
    assert [s.index for s in rank_candidates(scores, keep=2)] == [2, 3]
    assert not any(s.below_threshold for s in rank_candidates(scores, keep=5))


def test_threshold_marks_but_never_drops():
    scores = [ImageScore(0, 0.2, True), ImageScore(1, None, False), ImageScore(2, 0.6, True)]
    ranked = rank_candidates(scores, keep=3, min_score=0.5)
    assert [(s.index, s.below_threshold) for s in ranked] == [(2, False), (0, True), (1, True)]
    everything_low = rank_candidates([ImageScore(0, 0.1, True)], keep=1, min_score=0.99)
    assert len(everything_low) == 1 and everything_low[0].below_threshold


def test_cosine_ignores_norms():
    a = np.array([3.0, 4.0, 0.0])
    assert cosine_similarity(a, 10 * a) == pytest.approx(1.0)
    assert cosine_similarity(a, np.array([0.0, 0.0, 2.0])) == pytest.approx(0.0)


# --- the stage on real photos ---------------------------------------------------------------------


def test_same_face_resized_scores_near_one_others_clearly_lower(analyzer):
    reference = analyzer.analyze(tom(448)).embedding
    scores = score_images(analyzer, reference, [tom(256), t1(), blank()])
    same, group, nothing = scores
    assert same.face_found and same.identity_score > 0.99
    assert group.face_found and group.identity_score < same.identity_score - 0.08
    assert nothing.identity_score is None and not nothing.face_found
    # every other person in the group photo is clearly lower too
    others = [cosine_similarity(reference, f.embedding) for f in analyzer.detect(t1())]
    assert len(others) == 6 and max(others) < same.identity_score - 0.08


def test_one_of_the_group_found_again_in_a_crop_scores_highest(analyzer):
    group = t1()
    person = analyzer.detect(group)[0]  # the largest face; find it again in a crop around it
    x1, y1, x2, y2 = (int(v) for v in person.bbox)
    crop = group.crop((x1 - 60, y1 - 60, x2 + 60, y2 + 60)).resize((2 * (x2 - x1 + 120),) * 2)
    mine = score_images(analyzer, person.embedding, [crop])[0].identity_score
    others = [cosine_similarity(person.embedding, f.embedding) for f in analyzer.detect(group)[1:]]
    assert mine > 0.97 and max(others) < mine - 0.05


def test_reranking_stage_returns_the_highest_scored_candidates_in_order(analyzer):
    pipeline = IdentityPipeline(Settings(_env_file=None))
    pipeline.face_analyzer = analyzer
    reference = analyzer.analyze(tom(448)).embedding
    candidates = [blank(), t1(), tom(200), tom(320)]
    params = parse_params({"num_images": 3, "candidates": 4, "min_identity_score": 0.95})
    timings: dict = {}
    images, details = pipeline._rank_by_identity(candidates, reference, params, seed=100, timings=timings)
    assert [d["seed"] for d in details][:2] in ([102, 103], [103, 102])  # the two photos of Tom first
    assert details[2]["seed"] == 101 and images[2] is candidates[1]      # then the group photo
    scores = [d["identity_score"] for d in details]
    assert scores == sorted(scores, reverse=True)
    assert [d["below_threshold"] for d in details] == [False, False, True]
    assert all(images[i] is candidates[d["seed"] - 100] for i, d in enumerate(details))
    assert timings["identity_score_s"] > 0


# --- parameters -----------------------------------------------------------------------------------


def test_candidates_default_to_num_images_and_never_fall_below_it():
    assert parse_params({"num_images": 3}).candidate_count() == 3
    assert parse_params({"num_images": 2, "candidates": MAX_CANDIDATES}).candidate_count() == MAX_CANDIDATES
    for bad in ({"num_images": 3, "candidates": 2}, {"candidates": MAX_CANDIDATES + 1}, {"min_identity_score": 1.5}):
        with pytest.raises(IdentityBodyError) as err:
            parse_params(bad)
        assert err.value.field in bad
