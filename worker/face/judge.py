"""The identity judge: the recognizer that grades likeness, kept apart from the one whose
embedding conditions the generation. Scoring an image with the recognizer the generator was
steered by flatters it (the generator optimises towards that very embedding), so on the instantid
profile, where antelopev2 conditions, dlib's ResNet recognizer (from ``dlib-bin`` and
``face-recognition-models``, already a dependency) judges. On the tiny profile dlib already
analyses the upload, so the judge is the same recognizer and the result says so
(``identity_judge_independent: false``).

dlib's cosines run higher than antelopev2's (different people ~0.8-0.9, the same face ~0.95+:
worker.face.dlib_analyzer), so ``min_identity_score`` thresholds are on that scale.

Example::

    judge = identity_judge(pipeline.face_analyzer)   # antelopev2 conditions: dlib judges
    reference = judge.reference([face_image], face)   # the photos' embedding in the judge's space
    scores = judge.score(reference, images)           # [ImageScore, ...] (worker.face.identity_score)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from worker.face.combined_face import combine_embeddings
from worker.face.identity_score import ImageScore, score_images

DLIB_JUDGE = "dlib-resnet"


@dataclass
class IdentityJudge:
    name: str
    analyzer: Any          # .largest_face(image) -> FaceInfo | None
    independent: bool      # False when it is the recognizer that conditioned the generation

    def reference(self, face_images: Image.Image | list[Image.Image], conditioning_face: Any) -> np.ndarray | None:
        """The job's face photos' embedding in the judge's space: the conditioning one (every
        photo's, combined) when the judge is the same recognizer; else the judge's own reading of
        the photos, combined the same way (worker.face.combined_face) from those it finds a face
        in (None when it finds none: every image then scores None)."""
        if not self.independent:
            return conditioning_face.embedding
        photos = [face_images] if isinstance(face_images, Image.Image) else face_images
        found = [f for f in map(self.analyzer.largest_face, photos) if f is not None]
        if len(found) <= 1:
            return found[0].embedding if found else None
        return combine_embeddings([f.embedding for f in found])

    def score(self, reference: np.ndarray | None, images: list[Image.Image]) -> list[ImageScore]:
        if reference is None:
            return [ImageScore(index=i, identity_score=None, face_found=False) for i in range(len(images))]
        return score_images(self.analyzer, reference, images)

    def describe(self) -> dict[str, Any]:
        """What the result says about the judge."""
        return {"identity_judge": self.name, "identity_judge_independent": self.independent}


def identity_judge(conditioning_analyzer: Any) -> IdentityJudge:
    """dlib's recognizer as the judge; independent unless dlib is also what conditions (tiny)."""
    from worker.face.dlib_analyzer import DlibFaceAnalyzer

    if isinstance(conditioning_analyzer, DlibFaceAnalyzer):
        return IdentityJudge(DLIB_JUDGE, conditioning_analyzer, independent=False)
    analyzer = DlibFaceAnalyzer()
    analyzer.load()
    return IdentityJudge(DLIB_JUDGE, analyzer, independent=True)
