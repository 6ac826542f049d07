"""Face analysis with insightface's antelopev2 pack: the largest face's raw 512-d embedding, its
five keypoints, box and score.

insightface 2.1 notes (checked against the installed package): ``FaceAnalysis`` uses ``name``
directly when it is an existing directory (0.7.3 did the same through ``os.path.join`` with an
absolute name), otherwise ``root/models/<name>`` and, when that is missing, it DOWNLOADS the pack.
We therefore always verify the files first and hand it the absolute pack folder, which also
covers the nested folder the released zip unpacks to without copies or symlinks. ``prepare``
without ``det_size`` now means "auto" (several sizes), so ours is passed explicitly. Routing is by
graph signature: ≥5 outputs → SCRFD; square input ≥112 and divisible by 16 → ArcFaceONNX.

Example::

    analyzer = FaceAnalyzer(model_dir, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    analyzer.load()
    info = analyzer.analyze(Image.open("me.jpg"))   # FaceInfo(embedding (512,), kps (5, 2), ...)
    analyzer.largest_face(output_image)            # FaceInfo or None: any size, no error

The tiny profile's analyzer (worker.face.dlib_analyzer) answers the same three calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from shared.errors import ErrorCode, IdentityBodyError
from worker.models.layout import ANTELOPEV2_DIR, DETECTOR_FILE, RECOGNIZER_FILE

PACK_NAME = "antelopev2"
REQUIRED_FILES = (DETECTOR_FILE, RECOGNIZER_FILE)
DOWNLOAD_COMMAND = "idbody models download"


@dataclass
class FaceInfo:
    embedding: np.ndarray  # raw (512,) float32, NOT normed
    kps: np.ndarray  # (5, 2) float32, insightface order
    bbox: np.ndarray  # (4,) x1, y1, x2, y2
    det_score: float
    face_count: int
    image_size: tuple[int, int]  # (width, height) after EXIF transpose


def resolve_antelopev2_root(model_dir: Path) -> Path:
    """The folder holding the antelopev2 ``.onnx`` files, for ``FaceAnalysis(name=str(folder))``.

    Accepts ``model_dir/models/antelopev2/*.onnx`` and the nested
    ``model_dir/models/antelopev2/antelopev2/*.onnx`` of the released zip. Raises
    ``models_missing`` listing the missing files when the detector or recognizer is absent.

    Example::

        resolve_antelopev2_root(Path("/models"))   # Path("/models/models/antelopev2")
    """
    flat = Path(model_dir) / ANTELOPEV2_DIR
    nested = flat / PACK_NAME
    candidates = [flat, nested]
    folder = next((c for c in candidates if any(c.glob("*.onnx"))), flat)
    missing = [str(folder / name) for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise IdentityBodyError(
            ErrorCode.MODELS_MISSING,
            f"The face models are missing: {', '.join(missing)}. "
            f"Run `{DOWNLOAD_COMMAND}` to fetch them.",
            missing=missing,
        )
    return folder.resolve()


class FaceAnalyzer:
    """Detector + recognizer from antelopev2, loaded once, used per job."""

    # Two photos of one job whose embeddings are further apart (cosine distance, 1 - similarity)
    # are different people (worker.face.combined_face). Not measured here (no released weights on
    # the dev machines): insightface's guidance for its ArcFace models calls a similarity under 0.2
    # different people and 0.2-0.28 hard to tell, so 0.75 refuses only pairs clearly apart.
    faces_differ_distance = 0.75

    def __init__(
        self,
        model_dir: Path,
        providers: list[str],
        det_size: tuple[int, int] = (640, 640),
        min_face_px: int = 128,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.providers = list(providers)
        self.det_size = tuple(det_size)
        self.min_face_px = int(min_face_px)
        self.app: Any = None
        self.active_providers: list[str] = []   # what load() could actually use

    def load(self) -> None:
        """Build insightface's FaceAnalysis with only the detection and recognition modules."""
        import onnxruntime
        from insightface.app import FaceAnalysis

        folder = resolve_antelopev2_root(self.model_dir)
        available = set(onnxruntime.get_available_providers())
        providers = [p for p in self.providers if p in available] or ["CPUExecutionProvider"]
        if "CUDAExecutionProvider" in providers and hasattr(onnxruntime, "preload_dlls"):
            # the gpu image's only CUDA runtime and cuDNN are torch's wheels (nvidia/* in
            # site-packages), not on the loader's path: load them before the CUDA provider does
            onnxruntime.preload_dlls()
        app = FaceAnalysis(
            name=str(folder),
            root=str(self.model_dir),
            allowed_modules=["detection", "recognition"],
            providers=providers,
        )
        app.prepare(ctx_id=0 if "CUDAExecutionProvider" in providers else -1, det_size=self.det_size)
        self.app = app
        self.active_providers = providers

    def analyze(self, image: Image.Image) -> FaceInfo:
        """Detect faces and return the largest one's embedding and keypoints.

        Example::

            info = analyzer.analyze(Image.open("me.jpg"))
            info.face_count    # 1
        """
        return pick_upload_face(self.detect(image), self.min_face_px)

    def largest_face(self, image: Image.Image) -> FaceInfo | None:
        """The largest face of a generated image, or None; no size check."""
        faces = self.detect(image)
        return faces[0] if faces else None

    def detect(self, image: Image.Image) -> list[FaceInfo]:
        """Every face with its embedding, largest first."""
        if self.app is None:
            self.load()
        upright = ImageOps.exif_transpose(image).convert("RGB")
        bgr = np.ascontiguousarray(np.asarray(upright)[:, :, ::-1])
        faces = sorted(self.app.get(bgr), key=lambda f: -_bbox_area(f))
        return [
            FaceInfo(
                embedding=np.asarray(face.embedding, dtype=np.float32).reshape(-1),
                kps=np.asarray(face.kps, dtype=np.float32).reshape(5, 2),
                bbox=np.asarray(face.bbox, dtype=np.float32).reshape(4),
                det_score=float(face.det_score),
                face_count=len(faces),
                image_size=upright.size,
            )
            for face in faces
        ]


def pick_upload_face(faces: list[FaceInfo], min_face_px: int) -> FaceInfo:
    """The largest of ``faces`` (largest first), or the error a person can act on: no face, or a
    face under ``min_face_px`` across. Shared by every analyzer behind this interface."""
    if not faces:
        raise IdentityBodyError(
            ErrorCode.NO_FACE_DETECTED,
            "No face was found in the photo. Upload a well-lit photo where the face is clearly "
            f"visible and at least {min_face_px} px wide.",
            field="face_image",
        )
    face = faces[0]
    x1, y1, x2, y2 = (float(v) for v in face.bbox)
    shorter = min(x2 - x1, y2 - y1)
    if shorter < min_face_px:
        raise IdentityBodyError(
            ErrorCode.FACE_TOO_SMALL,
            f"The face in the photo is only {shorter:.0f} px across; it must be at least "
            f"{min_face_px} px. Upload a larger or closer photo of the face.",
            field="face_image",
            face_px=round(shorter),
            min_face_px=min_face_px,
        )
    return face


def _bbox_area(face: Any) -> float:
    x1, y1, x2, y2 = (float(v) for v in face.bbox)
    return (x2 - x1) * (y2 - y1)
