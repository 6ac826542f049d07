"""NudeNet 3.4.2's detector (``320n.onnx``, a YOLOv8-nano exported to ONNX, shipped inside the
``nudenet`` wheel: nothing is downloaded at run time), read with onnxruntime directly. The
package's own Python API needs OpenCV and resolves ``onnxruntime`` as a dependency, which would put
the CPU build beside ``onnxruntime-gpu``; so the package is installed with ``--no-deps``
(deploy/requirements-no-deps.txt) and only its model file is used here.

The model answers, for each of its anchors, a box and a probability per body-part class; an image
is as unsafe as its most confident anchor for any *exposed* intimate class. No box decoding or
non-maximum suppression is needed for that yes/no answer.

Example::

    detector = NudityDetector.load(["CPUExecutionProvider"])
    detector.score(image)        # 0.0-1.0: the highest exposed-class probability in the image
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

PACKAGE = "nudenet"
MODEL_FILE = "320n.onnx"
INPUT_SIDE = 320
BOX_ROWS = 4  # the output's first rows are the anchor's box (cx, cy, w, h); class probabilities follow
# the model's class index -> name, for the classes that make an image unsafe (the others are
# covered parts, faces, feet, belly and armpits)
EXPOSED_CLASSES: dict[int, str] = {
    2: "BUTTOCKS_EXPOSED",
    3: "FEMALE_BREAST_EXPOSED",
    4: "FEMALE_GENITALIA_EXPOSED",
    6: "ANUS_EXPOSED",
    14: "MALE_GENITALIA_EXPOSED",
}


def model_file() -> Path:
    """``320n.onnx`` inside the installed ``nudenet`` package, found without importing it (its
    ``__init__`` imports OpenCV)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"{PACKAGE} is not installed: pip install --no-deps nudenet==3.4.2 (the safety check's model), "
            "or turn the check off with IDBODY_SAFETY_CHECK=false")
    return Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE


def model_input(image: Image.Image) -> np.ndarray:
    """(1, 3, 320, 320) float32 in 0-1: the image padded to a square at its right and bottom with
    black (the model was trained on letterboxed squares), then resized."""
    rgb = image.convert("RGB")
    side = max(rgb.size)
    square = Image.new("RGB", (side, side))
    square.paste(rgb, (0, 0))
    pixels = np.asarray(square.resize((INPUT_SIDE, INPUT_SIDE), Image.BILINEAR), dtype=np.float32) / 255.0
    return pixels.transpose(2, 0, 1)[None]


class NudityDetector:
    """One onnxruntime session of NudeNet's 320n model."""

    name = "nudenet-320n"

    def __init__(self, session) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name

    @classmethod
    def load(cls, providers: list[str] | None = None) -> NudityDetector:
        import onnxruntime

        available = set(onnxruntime.get_available_providers())
        chosen = [p for p in (providers or []) if p in available] or ["CPUExecutionProvider"]
        return cls(onnxruntime.InferenceSession(str(model_file()), providers=chosen))

    def score(self, image: Image.Image) -> float:
        """The highest probability any anchor gives an exposed intimate class, 0-1."""
        (output,) = self.session.run(None, {self.input_name: model_input(image)})
        classes = np.asarray(output[0, BOX_ROWS:, :])           # (classes, anchors)
        exposed = classes[list(EXPOSED_CLASSES)]
        return float(exposed.max()) if exposed.size else 0.0
