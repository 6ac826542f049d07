"""One face from several photos of one person: each photo is analysed, the identity embeddings are
averaged, and the keypoints (IdentityNet's face layout) come from the best photo. Photos whose
faces lie too far apart in the recognizer's space are refused as different people.

- Identity: the normalised mean of the photos' embeddings (each normalised, averaged, normalised
  again, as the multi-reference InstantID tools do), so no photo weighs more for being sharper or
  larger; scaled back to the photos' mean raw length, because IdentityNet and the IP-Adapter's
  projection were trained on raw (unnormalised) embeddings.
- Keypoints: from the photo with the highest ``size x frontality`` (``keypoints_score``).
- Same person: every pair's cosine distance (1 - cosine similarity) must stay at or below the
  threshold, else ``faces_differ``, naming the photo furthest from the others.

One photo is used exactly as analysed: nothing is averaged or checked.

Example::

    combined = analyze_photos(analyzer, [front, side], max_distance=0.085)
    combined.face.embedding          # the mean identity; combined.face.kps: the best photo's
    combined.keypoints_from          # 0: the first photo gave the keypoints
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from PIL import Image

from shared.errors import ErrorCode, IdentityBodyError
from shared.face_images import FIELD, about_photo, photo_field, photo_label
from worker.face.analysis import FaceInfo

# insightface's keypoint order: image-left eye, image-right eye, nose tip, mouth corners
_EYES, _NOSE, _MOUTH = (0, 1), 2, (3, 4)


@dataclass
class CombinedFace:
    face: FaceInfo               # the mean embedding with the keypoints photo's kps, box and score
    photos: list[FaceInfo]       # each photo's own analysis, in the order sent
    keypoints_from: int          # 0-based index of the photo the keypoints come from
    max_distance: float | None   # the largest pairwise cosine distance (None: one photo)

    def summary(self) -> list[dict[str, Any]]:
        """Per photo, for the result's analysis: its face's box, score and frontality."""
        return [{"det_score": round(float(f.det_score), 4), "box_size": _box_size(f),
                 "frontality": round(frontality(f.kps), 3), "keypoints": i == self.keypoints_from}
                for i, f in enumerate(self.photos)]


def frontality(kps: np.ndarray) -> float:
    """How frontal a face is, from its five keypoints: 1 for a face looking straight at the camera,
    falling towards 0 as the head turns sideways.

    A turned head brings the nose tip towards one eye and one mouth corner (seen from the side,
    the far half of the face is foreshortened). So for the eyes, and again for the mouth corners,
    the nearer one's distance to the nose tip is divided by the farther one's; frontality is the
    mean of the two ratios. A tilted (rolled) head keeps its ratios, so tilt is not penalised: the
    keypoints are drawn with their angles anyway.

    Example::

        frontality([[40, 50], [80, 50], [60, 70], [45, 90], [75, 90]])   # 1.0
    """
    points = np.asarray(kps, dtype=np.float64).reshape(5, 2)
    ratios = []
    for a, b in (_EYES, _MOUTH):
        da, db = (float(np.linalg.norm(points[i] - points[_NOSE])) for i in (a, b))
        ratios.append(min(da, db) / max(da, db) if max(da, db) > 0 else 0.0)
    return float(np.mean(ratios))


def keypoints_score(face: FaceInfo) -> float:
    """Face size (the square root of its box's area, pixels) times its frontality: the largest,
    most frontal face wins; a face half as frontal must be twice as large to win."""
    x1, y1, x2, y2 = (float(v) for v in face.bbox)
    return float(np.sqrt(max(0.0, x2 - x1) * max(0.0, y2 - y1))) * frontality(face.kps)


def pick_keypoints_photo(faces: list[FaceInfo]) -> int:
    """The index of the photo whose keypoints lay out the face (the first of equals)."""
    scores = [keypoints_score(f) for f in faces]
    return int(np.argmax(scores))


def combine_embeddings(embeddings: list[np.ndarray]) -> np.ndarray:
    """The normalised mean of ``embeddings`` (each normalised first), scaled to their mean length.

    Example::

        combine_embeddings([a, b])   # direction: (a/|a| + b/|b|) normalised; length (|a| + |b|) / 2
    """
    stacked = np.stack([np.asarray(e, dtype=np.float64).reshape(-1) for e in embeddings])
    norms = np.linalg.norm(stacked, axis=1, keepdims=True)
    mean = (stacked / norms).mean(axis=0)
    return (mean / np.linalg.norm(mean) * norms.mean()).astype(np.float32)


def pairwise_distances(embeddings: list[np.ndarray]) -> np.ndarray:
    """(n, n) cosine distances (1 - cosine similarity) between every two embeddings."""
    stacked = np.stack([np.asarray(e, dtype=np.float64).reshape(-1) for e in embeddings])
    unit = stacked / np.linalg.norm(stacked, axis=1, keepdims=True)
    return 1.0 - unit @ unit.T


def check_same_person(faces: list[FaceInfo], max_distance: float) -> float:
    """The largest pairwise distance, or ``faces_differ`` when it is over ``max_distance``."""
    distances = pairwise_distances([f.embedding for f in faces])
    count = len(faces)
    largest = max(float(distances[i, j]) for i, j in itertools.combinations(range(count), 2))
    if largest <= max_distance:
        return largest
    how_far = f"(face distance {largest:.3f}; at most {max_distance:g} counts as one person)"
    if count == 2:
        raise IdentityBodyError(
            ErrorCode.FACES_DIFFER,
            f"Photos 1 and 2 do not show the same person {how_far}. Send photos of one person only.",
            field=FIELD, distance=round(largest, 4), max_distance=max_distance)
    outlier = int(np.argmax(distances.sum(axis=1)))  # the photo furthest from the others
    raise IdentityBodyError(
        ErrorCode.FACES_DIFFER,
        f"{photo_label(outlier, count)} does not show the same person as the others {how_far}. "
        "Leave it out or send photos of one person only.",
        field=photo_field(outlier, count), distance=round(largest, 4), max_distance=max_distance)


def analyze_photos(analyzer: Any, images: list[Image.Image], max_distance: float | None = None) -> CombinedFace:
    """Analyse each photo (an error names the photo), check they show one person (further apart
    than ``max_distance``, by default the analyzer's ``faces_differ_distance``: ``faces_differ``),
    combine."""
    faces = []
    for index, image in enumerate(images):
        try:
            faces.append(analyzer.analyze(image))
        except IdentityBodyError as exc:
            raise about_photo(exc, index, len(images)) from None
    if len(faces) == 1:
        return CombinedFace(face=faces[0], photos=faces, keypoints_from=0, max_distance=None)
    largest = check_same_person(faces, max_distance or analyzer.faces_differ_distance)
    best = pick_keypoints_photo(faces)
    face = replace(faces[best], embedding=combine_embeddings([f.embedding for f in faces]))
    return CombinedFace(face=face, photos=faces, keypoints_from=best, max_distance=largest)


def _box_size(face: FaceInfo) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in face.bbox)
    return [round(x2 - x1, 1), round(y2 - y1, 1)]
