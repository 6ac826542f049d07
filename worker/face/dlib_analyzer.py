"""The tiny profile's face analyzer: dlib's HOG face detector, its 68-point landmark predictor and
its ResNet face recognizer, from PyPI (``dlib-bin`` + ``face-recognition-models``, which ships the
trained ``.dat`` files inside the wheel: nothing is downloaded at run time).

It answers exactly like ``worker.face.analysis.FaceAnalyzer`` (antelopev2) does, so the tiny
profile runs the same pipeline code on real photos:

- ``kps``: five points in insightface's order (the eye on the image's left, the other eye, nose
  tip, the mouth corner on the image's left, the other corner), from the 68 landmarks;
- ``embedding``: dlib's 128-d descriptor mapped to the 512-d the IP-Adapter's projection expects
  by a fixed, seeded matrix with orthonormal columns times a constant, so cosine similarities are
  exactly dlib's own and the norm is of the order of antelopev2's raw embeddings;
- ``det_score``: the logistic of the HOG detector's SVM margin (0.5 at the decision boundary);
- ``bbox``: dlib's square box (brows to chin, a little tighter than SCRFD's).

Note the descriptor space: dlib's descriptors of different people have cosine ~0.8-0.9 (they lie
in a narrow cone; dlib compares them by Euclidean distance, 0.6 being its same-person threshold),
while the same face gives ~0.99+. Identity scores on the tiny profile are therefore compressed
towards 1 compared with antelopev2's, where strangers score near 0.

Example::

    analyzer = DlibFaceAnalyzer(min_face_px=128)
    analyzer.load()
    info = analyzer.analyze(Image.open("me.jpg"))   # FaceInfo(embedding (512,), kps (5, 2), ...)
    analyzer.largest_face(output_image)             # FaceInfo or None, no size check
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from worker.face.analysis import FaceInfo, pick_upload_face

PACKAGE = "face_recognition_models"
LANDMARKS_FILE = "shape_predictor_68_face_landmarks.dat"
RECOGNIZER_FILE = "dlib_face_recognition_resnet_model_v1.dat"
DESCRIPTOR_DIM = 128
EMBEDDING_DIM = 512
PROJECTION_SEED = 20240601
# antelopev2's raw embeddings have norms of about 20-30; dlib's descriptors about 1.4
EMBEDDING_GAIN = 16.0
# The 68-point scheme (iBUG 300-W): 36-41 and 42-47 the eyes, 30 the nose tip, 48 and 54 the
# mouth corners; in image coordinates 36-41 is the eye on the left.
EYE_ON_LEFT = slice(36, 42)
EYE_ON_RIGHT = slice(42, 48)
NOSE_TIP, MOUTH_LEFT, MOUTH_RIGHT = 30, 48, 54


def model_files() -> dict[str, Path]:
    """The two ``.dat`` files inside the installed ``face-recognition-models`` package.

    Found through the import system without importing the package: its ``__init__`` needs
    ``pkg_resources``, which recent setuptools no longer ship.
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"{PACKAGE} is not installed; install the project's [tiny] extra (pip install -e '.[tiny]')")
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    return {"landmarks": folder / LANDMARKS_FILE, "recognizer": folder / RECOGNIZER_FILE}


def embedding_projection(seed: int = PROJECTION_SEED) -> np.ndarray:
    """(512, 128) matrix with orthonormal columns (times EMBEDDING_GAIN): it keeps dot products,
    so the cosine of two embeddings is the cosine of the two dlib descriptors."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((EMBEDDING_DIM, DESCRIPTOR_DIM)))
    q *= np.sign(np.diag(r))  # a unique Q for the seed, whatever the LAPACK build
    return (q * EMBEDDING_GAIN).astype(np.float32)


def five_keypoints(landmarks: np.ndarray) -> np.ndarray:
    """(68, 2) landmarks → (5, 2) keypoints in insightface's order.

    Example::

        five_keypoints(points)[0]   # centre of the eye on the image's left
    """
    points = np.asarray(landmarks, dtype=np.float32).reshape(68, 2)
    return np.stack([
        points[EYE_ON_LEFT].mean(axis=0), points[EYE_ON_RIGHT].mean(axis=0),
        points[NOSE_TIP], points[MOUTH_LEFT], points[MOUTH_RIGHT],
    ]).astype(np.float32)


_DLIB_LOCK = threading.Lock()


@functools.cache
def dlib_models() -> tuple[Any, Any, Any]:
    """dlib's detector, 68-point predictor and recognizer, read from the wheel once per process
    (0.7 s): they hold no per-image state, so every analyzer in the process shares them."""
    import dlib

    files = model_files()
    return (dlib.get_frontal_face_detector(), dlib.shape_predictor(str(files["landmarks"])),
            dlib.face_recognition_model_v1(str(files["recognizer"])))


class DlibFaceAnalyzer:
    """Detector + landmarks + recognizer from dlib, loaded once, used per job."""

    # dlib's own same-person rule, a Euclidean distance of 0.6 between descriptors, as a cosine
    # distance at the descriptors' measured length (~1.45): 0.36 / (2 x 1.45^2) = 0.085. On the test
    # photos (tests/face_photos.py) copies of one face lie 0.0005-0.015 apart and different people
    # 0.100-0.196 (tests/worker/face/test_combined_face.py measures it).
    faces_differ_distance = 0.085

    def __init__(self, model_dir: Path | None = None, providers: list[str] | None = None,
                 det_size: tuple[int, int] = (640, 640), min_face_px: int = 128) -> None:
        self.model_dir = model_dir      # unused: the models ship in the wheel
        self.det_size = tuple(det_size)
        self.min_face_px = int(min_face_px)
        self.active_providers: list[str] = ["dlib-cpu"]
        self.detector: Any = None
        self.landmarks: Any = None
        self.recognizer: Any = None
        self.projection = embedding_projection()

    def load(self) -> None:
        self.detector, self.landmarks, self.recognizer = dlib_models()

    def analyze(self, image: Image.Image) -> FaceInfo:
        """The largest face of an upload; raises no_face_detected / face_too_small. An accepted
        face is big, so detection first runs without upsampling (a quarter of the pixels; dlib
        finds faces from ~80 px); only when that finds none is it run upsampled, so a face too
        small to use is still found and refused with its size rather than as missing."""
        faces = self.detect(image, upsample=0) or self.detect(image)
        return pick_upload_face(faces, self.min_face_px)

    def largest_face(self, image: Image.Image) -> FaceInfo | None:
        """The largest face of a generated image, or None; no size check."""
        faces = self.detect(image)
        return faces[0] if faces else None

    def detect(self, image: Image.Image, upsample: int = 1) -> list[FaceInfo]:
        """Every face, largest first. Detection runs on a copy fitted into ``det_size`` (as SCRFD
        does) and upsampled ``upsample`` times (once: faces down to ~40 px there); landmarks and
        descriptors are read from the full-resolution picture."""
        if self.detector is None:
            self.load()
        upright = ImageOps.exif_transpose(image).convert("RGB")
        pixels = np.ascontiguousarray(np.asarray(upright))
        scale = min(1.0, self.det_size[0] / upright.width, self.det_size[1] / upright.height)
        small = upright if scale == 1.0 else upright.resize(
            (max(1, round(upright.width * scale)), max(1, round(upright.height * scale))), Image.BILINEAR)
        with _DLIB_LOCK:  # the process shares one set of dlib models; a batching worker analyses from several threads
            rects, margins, _ = self.detector.run(np.ascontiguousarray(np.asarray(small)), upsample, 0.0)
            faces = [self._describe(pixels, rect, margin, scale) for rect, margin in zip(rects, margins)]
        faces.sort(key=lambda f: -float((f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1])))
        for face in faces:
            face.face_count = len(faces)
            face.image_size = upright.size
        return faces

    def _describe(self, pixels: np.ndarray, rect: Any, margin: float, scale: float) -> FaceInfo:
        import dlib

        box = np.array([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1], np.float32) / scale
        full = dlib.rectangle(*(int(v) for v in np.rint(box)))
        shape = self.landmarks(pixels, full)
        points = np.array([[p.x, p.y] for p in shape.parts()], np.float32)
        descriptor = np.asarray(self.recognizer.compute_face_descriptor(pixels, shape), np.float32)
        return FaceInfo(
            embedding=self.projection @ descriptor,
            kps=five_keypoints(points),
            bbox=box,
            det_score=float(1.0 / (1.0 + np.exp(-float(margin)))),
            face_count=1,
            image_size=(pixels.shape[1], pixels.shape[0]),
        )
