"""Likeness, measured: each generated image's identity score, and the re-ranking of candidates by it.

The score of an image is the cosine similarity between the input face's recognition embedding and
the embedding of the largest face found in the image, by the same recognizer that analysed the
upload (antelopev2's glintr100 on the released weights, dlib's on the tiny profile). 1 is the same
face; how low strangers score depends on the recognizer (antelopev2: near 0; dlib: ~0.85).

Example::

    scores = score_images(pipeline.face_analyzer, face.embedding, images)
    ranked = rank_candidates(scores, keep=4, min_score=0.3)
    [images[r.index] for r in ranked]          # the 4 best, best first
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from PIL import Image


@dataclass
class ImageScore:
    index: int                      # the candidate's place in the batch (its seed is seed + index)
    identity_score: float | None    # None when no face was found
    face_found: bool
    below_threshold: bool = False   # set by rank_candidates when a min_score is given


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of two embeddings (raw or normed: the norms cancel).

    Example::

        cosine_similarity(face.embedding, face.embedding)   # 1.0
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def score_images(analyzer: Any, reference: np.ndarray, images: list[Image.Image]) -> list[ImageScore]:
    """Score each image against ``reference`` (the upload's embedding) with ``analyzer``'s
    ``largest_face``; an image with no face gets ``identity_score=None, face_found=False``."""
    scores = []
    for index, image in enumerate(images):
        face = analyzer.largest_face(image)
        if face is None:
            scores.append(ImageScore(index=index, identity_score=None, face_found=False))
        else:
            score = round(cosine_similarity(reference, face.embedding), 4)
            scores.append(ImageScore(index=index, identity_score=score, face_found=True))
    return scores


def rank_candidates(scores: list[ImageScore], keep: int, min_score: float | None = None) -> list[ImageScore]:
    """The ``keep`` best candidates, best first: highest score first, images without a face last,
    ties in batch order. With ``min_score``, images under it (or without a face) are marked
    ``below_threshold`` and still returned: a threshold never empties a job.

    Example::

        rank_candidates([ImageScore(0, 0.2, True), ImageScore(1, 0.7, True)], keep=1)
        # [ImageScore(index=1, identity_score=0.7, ...)]
    """
    order = sorted(scores, key=lambda s: (s.identity_score is None, -(s.identity_score or 0.0), s.index))
    def below(score: ImageScore) -> bool:
        return min_score is not None and (score.identity_score is None or score.identity_score < min_score)

    return [replace(s, below_threshold=below(s)) for s in order[:keep]]
