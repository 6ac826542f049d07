"""Body landmarks from a photo: MediaPipe's BlazePose models (the two ``.tflite`` files the
mediapipe 0.10.21 wheel carries) run by LiteRT (``ai-edge-litert``).

The mediapipe package is installed only as the carrier of those files: its Python API needs
protobuf<5, which this project cannot take, so the two stages are run here directly.

1. The detector sees the whole photo letterboxed to 224×224 and scores 2254 fixed anchors; the best
   box above ``MIN_SCORE`` gives the hips' centre and a point whose distance from it is the body's
   radius, and the direction between them is the body's tilt.
2. The landmark model sees a square crop around the hips, 2.5 radii wide and turned upright
   (256×256), and returns 33 landmarks in the crop, each with a visibility and a presence, plus a
   flag that says whether a person is in the crop at all.

Example::

    detector = PoseDetector.load()
    pose = detector.detect(Image.open("dancer.jpg"))   # None when nobody is in the photo
    pose.points[0], pose.visibility[0]                  # the nose, in the photo's pixels
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

# where the mediapipe wheel puts the two models (never imported, only read)
DETECTOR_FILE = "mediapipe/modules/pose_detection/pose_detection.tflite"
LANDMARK_FILE = "mediapipe/modules/pose_landmark/pose_landmark_full.tflite"
DETECTOR_SIZE, LANDMARK_SIZE = 224, 256
MIN_SCORE = 0.5          # a detection anchor's score, and the landmark model's person flag
# the detector's anchor grid: one group of cells per feature-map stride, this many anchors a cell
ANCHOR_GROUPS = ((8, 2), (16, 2), (32, 6))
ROI_SCALE = 1.25         # the landmark crop's side, in body diameters
LANDMARK_COUNT = 33      # the body's; the model's other six steer video tracking


@dataclass(frozen=True)
class BodyPose:
    """BlazePose's 33 landmarks in the photo's pixels (x right, y down), each with the model's
    visibility (not hidden by the body or something else) and presence (inside the photo), both
    0..1, and the detector's score."""
    points: np.ndarray       # float32 (33, 2)
    visibility: np.ndarray   # float32 (33,)
    presence: np.ndarray     # float32 (33,)
    score: float


def model_path(relative: str) -> Path:
    """A model file inside the installed mediapipe wheel, found without importing mediapipe."""
    try:
        path = Path(distribution("mediapipe").locate_file(relative))
    except PackageNotFoundError:
        path = Path(relative)
    if not path.is_file():
        raise FileNotFoundError(f"{relative} is missing: install mediapipe==0.10.21 with --no-deps "
                                "(deploy/requirements-no-deps.txt), the wheel that carries the pose models")
    return path


def anchor_centres() -> np.ndarray:
    """The detector's 2254 anchor centres, (x, y) in 0..1, in the order of its outputs."""
    centres = []
    for stride, per_cell in ANCHOR_GROUPS:
        cells = math.ceil(DETECTOR_SIZE / stride)
        ys, xs = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(grid, per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x.astype(np.float64), -100.0, 100.0)))


class PoseDetector:
    """The two BlazePose stages on LiteRT interpreters (CPU, one thread each: one photo per job)."""

    def __init__(self, detector, landmarker) -> None:
        self.detector, self.landmarker = detector, landmarker
        self.anchors = anchor_centres()
        self._lock = threading.Lock()   # an interpreter holds its tensors: one photo at a time

    @classmethod
    def load(cls) -> PoseDetector:
        from ai_edge_litert.interpreter import Interpreter

        interpreters = []
        for relative in (DETECTOR_FILE, LANDMARK_FILE):
            interpreter = Interpreter(model_path=str(model_path(relative)), num_threads=1)
            interpreter.allocate_tensors()
            interpreters.append(interpreter)
        return cls(*interpreters)

    def detect(self, photo: Image.Image) -> BodyPose | None:
        """The most confident person's landmarks, or None when the photo shows nobody."""
        rgb = np.asarray(photo.convert("RGB"))   # uint8: only the small model inputs become float
        with self._lock:
            found = self._detect_body(rgb)
            if found is None:
                return None
            roi, score = found
            return self._landmarks(rgb, roi, score)

    def _run(self, interpreter, tensor: np.ndarray) -> list[np.ndarray]:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], tensor[None])
        interpreter.invoke()
        # the outputs in the models' own order (Identity, Identity_1, ...), whatever LiteRT lists first
        outputs = sorted(interpreter.get_output_details(), key=lambda d: (len(d["name"]), d["name"]))
        return [interpreter.get_tensor(d["index"])[0] for d in outputs]

    def _detect_body(self, rgb: np.ndarray) -> tuple[np.ndarray, float] | None:
        """Stage 1: the best anchor's box → the landmark crop as (centre x, centre y, side, angle)."""
        height, width = rgb.shape[:2]
        scale = DETECTOR_SIZE / max(width, height)
        resized = cv2.resize(rgb, (max(1, round(width * scale)), max(1, round(height * scale))),
                             interpolation=cv2.INTER_AREA)
        canvas = np.zeros((DETECTOR_SIZE, DETECTOR_SIZE, 3), np.float32)
        left, top = (DETECTOR_SIZE - resized.shape[1]) // 2, (DETECTOR_SIZE - resized.shape[0]) // 2
        canvas[top:top + resized.shape[0], left:left + resized.shape[1]] = resized
        boxes, scores = self._run(self.detector, canvas / 127.5 - 1.0)
        scores = _sigmoid(scores[:, 0])
        best = int(np.argmax(scores))
        if scores[best] < MIN_SCORE:
            return None
        # keypoint 0: the hips' centre; keypoint 1: on the circle around the whole body
        raw = boxes[best, 4:8].reshape(2, 2)
        points = (raw / DETECTOR_SIZE + self.anchors[best]) * DETECTOR_SIZE
        points = (points - [left, top]) / scale   # back to the photo's pixels
        hips, rim = points
        radius = float(np.hypot(*(rim - hips)))
        # the crop turns so the line from the hips to ``rim`` points up
        angle = math.pi / 2 - math.atan2(-(rim[1] - hips[1]), rim[0] - hips[0])
        return np.array([hips[0], hips[1], 2 * radius * ROI_SCALE, angle]), float(scores[best])

    def _landmarks(self, rgb: np.ndarray, roi: np.ndarray, score: float) -> BodyPose | None:
        """Stage 2: the upright crop → 33 landmarks, mapped back to the photo."""
        cx, cy, side, angle = roi
        if side < 1:
            return None
        # crop → photo: scale by side/LANDMARK_SIZE, turn by ``angle``, move to the centre
        c, s = math.cos(angle), math.sin(angle)
        k = side / LANDMARK_SIZE
        to_photo = np.array([[k * c, -k * s, 0.0], [k * s, k * c, 0.0]])
        to_photo[:, 2] = [cx, cy] - to_photo[:, :2] @ [LANDMARK_SIZE / 2, LANDMARK_SIZE / 2]
        crop = cv2.warpAffine(rgb, cv2.invertAffineTransform(to_photo), (LANDMARK_SIZE, LANDMARK_SIZE),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        outputs = self._run(self.landmarker, crop.astype(np.float32) / 255.0)
        landmarks, flag = outputs[0].reshape(-1, 5), float(outputs[1].reshape(-1)[0])
        if flag < MIN_SCORE:
            return None
        body = landmarks[:LANDMARK_COUNT]
        points = body[:, :2] @ to_photo[:, :2].T + to_photo[:, 2]
        return BodyPose(points=points.astype(np.float32), visibility=_sigmoid(body[:, 3]).astype(np.float32),
                        presence=_sigmoid(body[:, 4]).astype(np.float32), score=score)


def load_pose_detector() -> PoseDetector | None:
    """The detector, or None when its runtime or model files are not installed (logged: jobs with
    a pose photo then fail with models_missing; everything else works)."""
    try:
        detector = PoseDetector.load()
    except (ImportError, FileNotFoundError) as exc:
        log.warning("no pose detector, pose photos will be refused: %s", exc)
        return None
    log.info("pose detector loaded (BlazePose on LiteRT)")
    return detector
