"""Small ONNX stand-ins for antelopev2's detector and recognizer, built offline by the project and
run by insightface's own model zoo (the file names and graph signatures route them to SCRFD and
ArcFaceONNX exactly as the released files are routed).

The detector is a real, if crude, face detector: normalised cross-correlation of the luminance
with a hand-built face template (dark eyes, brows and mouth on a bright face oval, placed at
insightface's canonical 112×112 alignment points), at SCRFD's strides 8/16/32 with two template
sizes per stride as the two anchors. Flat or uniform regions have no variance and never match;
face-like light/dark structure does. Boxes are the template window, keypoints the canonical
alignment points inside it.

The recognizer is a small conv net with seeded random weights: 112×112 aligned crop → 512 values
that depend on the crop (deterministic; different faces give different vectors).

Example::

    write_tiny_antelopev2(model_dir / "models" / "antelopev2")
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from worker.model_layout import DETECTOR_FILE, RECOGNIZER_FILE

OPSET = 17
STRIDES = (8, 16, 32)
# Per stride, two anchors as (template cells, dilation): a face of cells·dilation·stride pixels
# matches (56, 88, 112, 176, 288 and 448 px at the detector's 640 input); neighbouring sizes
# overlap enough for NMS to merge duplicates. Odd cell counts keep the template centred.
ANCHORS: dict[int, tuple[tuple[int, int], tuple[int, int]]] = {
    8: ((7, 1), (11, 1)),
    16: ((7, 1), (11, 1)),
    32: ((9, 1), (7, 2)),
}
# The template window inside the canonical 112×112 crop (x0, y0, side): forehead to chin.
WINDOW = (12, 18, 88)
# Face regions in the canonical crop: (centre x, y), (width, height).
REGIONS: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "left_eye": ((38, 52), (20, 12)),
    "right_eye": ((74, 52), (20, 12)),
    "bridge": ((56, 52), (12, 12)),
    "left_cheek": ((36, 70), (20, 12)),
    "right_cheek": ((76, 70), (20, 12)),
    "mouth": ((56, 92), (28, 10)),
}
# (brighter regions, darker regions): every one must hold for a face.
CONTRASTS: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("left_cheek",), ("left_eye",)),
    (("right_cheek",), ("right_eye",)),
    (("bridge",), ("left_eye", "right_eye")),
    (("left_cheek", "right_cheek"), ("mouth",)),
)
# insightface's ArcFace alignment targets in a 112×112 crop (eyes, nose tip, mouth corners).
CANONICAL_KPS = np.array(
    [[38.29, 51.70], [73.53, 51.50], [56.03, 71.74], [41.55, 92.37], [70.73, 92.20]],
    dtype=np.float32,
)
NCC_THRESHOLD = 0.12
NCC_SHARPNESS = 60.0
# Minimum local standard deviation (input is scaled to about [-1, 1]): JPEG noise on a flat
# wall is not a face.
MIN_STD = 0.04
STD_SHARPNESS = 60.0
EMBEDDING_DIM = 512
RECOGNIZER_SEED = 20240601


def write_tiny_antelopev2(folder: Path) -> list[Path]:
    """Write the tiny detector and recognizer into ``folder`` (``<model_dir>/models/antelopev2``)
    under the released file names; returns the written paths.

    Example::

        write_tiny_antelopev2(Path("/tmp/m/models/antelopev2"))  # [.../scrfd_10g_bnkps.onnx, ...]
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / DETECTOR_FILE, folder / RECOGNIZER_FILE]
    onnx.save(build_detector(), paths[0])
    onnx.save(build_recognizer(), paths[1])
    return paths


def face_filters(cells: int) -> np.ndarray:
    """The contrast filters of a face, each zero-mean and unit-norm, ``(k, cells, cells)``.

    Each says one thing a face has: each eye darker than the cheek below it, the bridge of the
    nose brighter than the eyes, the mouth darker than the cheeks. Comparing regions on the same
    side keeps the tests valid under side lighting.
    """
    regions = {name: _region_mask(centre, size, cells) for name, (centre, size) in REGIONS.items()}
    filters = []
    for bright, dark in CONTRASTS:
        f = sum(regions[r] / regions[r].sum() for r in bright) / len(bright)
        f = f - sum(regions[r] / regions[r].sum() for r in dark) / len(dark)
        filters.append(f / np.linalg.norm(f))
    return np.stack(filters).astype(np.float32)


def _region_mask(centre: tuple[float, float], size: tuple[float, float], cells: int) -> np.ndarray:
    canvas = np.zeros((112, 112), np.float32)
    (cx, cy), (w, h) = centre, size
    canvas[int(cy - h / 2) : int(cy + h / 2), int(cx - w / 2) : int(cx + w / 2)] = 1.0
    x0, y0, side = WINDOW
    crop = canvas[y0 : y0 + side, x0 : x0 + side]
    return cv2.resize(crop, (cells, cells), interpolation=cv2.INTER_AREA)


class _Graph:
    """Collects nodes and initializers with unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def const(self, value: np.ndarray | float, dtype=np.float32) -> str:
        self._n += 1
        name = f"c{self._n}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, kind: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        self._n += 1
        out = output or f"t{self._n}"
        self.nodes.append(helper.make_node(kind, inputs, [out], name=f"n{self._n}_{kind.lower()}", **attrs))
        return out


def build_detector() -> onnx.ModelProto:
    """SCRFD-signature graph: input [1,3,H,W]; outputs score (N,1) ×3, bbox (N,4) ×3, kps (N,10) ×3."""
    g = _Graph()
    gray_w = np.array([0.299, 0.587, 0.114], np.float32).reshape(1, 3, 1, 1)  # input is RGB
    gray = g.op("Conv", ["input.1", g.const(gray_w)])
    scores, boxes, points = [], [], []
    for stride in STRIDES:
        per_anchor = [_ncc_score(g, gray, stride, cells, dilation) for cells, dilation in ANCHORS[stride]]
        pooled = _pool(g, gray, stride, 1)
        score = g.op("Concat", per_anchor, axis=1)
        scores.append(_flatten(g, score, 1, f"score_{stride}"))
        boxes.append(_flatten(g, _constant_map(g, pooled, _box_offsets(stride)), 4, f"bbox_{stride}"))
        points.append(_flatten(g, _constant_map(g, pooled, _kps_offsets(stride)), 10, f"kps_{stride}"))
    outputs = scores + boxes + points
    graph = helper.make_graph(
        g.nodes,
        "tiny_scrfd",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "height", "width"])],
        [
            helper.make_tensor_value_info(name, TensorProto.FLOAT, [f"n{name}", width])
            for name, width in zip(outputs, [1] * 3 + [4] * 3 + [10] * 3)
        ],
        g.inits,
    )
    return _finish(graph)


def _pool(g: _Graph, gray: str, stride: int, dilation: int) -> str:
    """Luminance averaged over blocks of stride·dilation pixels on the stride grid, block centres
    aligned with the undilated ones."""
    extra = stride * (dilation - 1) // 2
    return g.op(
        "AveragePool",
        [gray],
        kernel_shape=[stride * dilation] * 2,
        strides=[stride, stride],
        pads=[extra] * 4,
        count_include_pad=0,
    )


def _ncc_score(g: _Graph, gray: str, stride: int, cells: int, dilation: int) -> str:
    pooled = _pool(g, gray, stride, dilation)
    squared = g.op("Mul", [pooled, pooled])
    filters = face_filters(cells)
    pad = dilation * (cells // 2)
    kernel = g.const(filters[:, None])
    corr = g.op("Conv", [pooled, kernel], pads=[pad] * 4, dilations=[dilation] * 2)  # (1, k, h, w)
    # local statistics over the same dilated window: a conv with a uniform 1/cells² kernel
    uniform = g.const(np.full((1, 1, cells, cells), 1.0 / cells**2, np.float32))
    window = {"pads": [pad] * 4, "dilations": [dilation] * 2}
    mean = g.op("Conv", [pooled, uniform], **window)
    mean_sq = g.op("Conv", [squared, uniform], **window)
    var = g.op("Relu", [g.op("Sub", [mean_sq, g.op("Mul", [mean, mean])])])
    std = g.op("Sqrt", [var])
    # template has unit norm, so |corr| <= sqrt(cells² · var): ncc in [-1, 1]
    denom = g.op("Add", [g.op("Mul", [std, g.const(float(cells))]), g.const(1e-6)])
    # the weakest of the face's contrasts decides: all must be there
    ncc = g.op("ReduceMin", [g.op("Div", [corr, denom])], axes=[1], keepdims=1)
    match = _sigmoid_above(g, ncc, NCC_THRESHOLD, NCC_SHARPNESS)
    textured = _sigmoid_above(g, std, MIN_STD, STD_SHARPNESS)
    return g.op("Mul", [match, textured])


def _sigmoid_above(g: _Graph, x: str, threshold: float, sharpness: float) -> str:
    shifted = g.op("Sub", [x, g.const(threshold)])
    return g.op("Sigmoid", [g.op("Mul", [shifted, g.const(sharpness)])])


def _box_offsets(stride: int) -> np.ndarray:
    # SCRFD anchors sit at the cell's top-left corner; the pooled cell's centre is half a cell on.
    centre = 0.5 - 0.5 / stride
    rows = []
    for cells, dilation in ANCHORS[stride]:
        half = cells * dilation / 2
        rows.append([half - centre, half - centre, half + centre, half + centre])
    return np.array(rows, np.float32)  # (anchors, 4) in stride units: left, top, right, bottom


def _kps_offsets(stride: int) -> np.ndarray:
    centre = 0.5 - 0.5 / stride
    rows = []
    x0, y0, side = WINDOW
    relative = (CANONICAL_KPS - [x0, y0]) / side - 0.5  # in template sides, from its centre
    for cells, dilation in ANCHORS[stride]:
        offsets = relative * cells * dilation + centre
        rows.append(offsets.reshape(-1))
    return np.array(rows, np.float32)  # (anchors, 10): dx, dy per point in stride units


def _constant_map(g: _Graph, like: str, values: np.ndarray) -> str:
    """A (1, anchors·k, h, w) map holding ``values`` at every cell of ``like``'s grid."""
    channels = values.size
    zeros = np.zeros((channels, 1, 1, 1), np.float32)
    return g.op("Conv", [like, g.const(zeros), g.const(values.reshape(-1))])


def _flatten(g: _Graph, grid: str, width: int, name: str) -> str:
    # (1, anchors·width, h, w) → (h·w·anchors, width): SCRFD's anchor order.
    nhwc = g.op("Transpose", [grid], perm=[0, 2, 3, 1])
    return g.op("Reshape", [nhwc, g.const(np.array([-1, width]), np.int64)], output=name)


def build_recognizer(seed: int = RECOGNIZER_SEED) -> onnx.ModelProto:
    """ArcFace-signature graph: input [B,3,112,112] (mean/std 127.5) → (B, 512), random weights."""
    rng = np.random.default_rng(seed)
    g = _Graph()

    def conv(x: str, cin: int, cout: int, k: int, stride: int) -> str:
        w = rng.normal(0, (2.0 / (cin * k * k)) ** 0.5, (cout, cin, k, k)).astype(np.float32)
        y = g.op("Conv", [x, g.const(w), g.const(np.zeros(cout))], strides=[stride] * 2, pads=[k // 2] * 4)
        return g.op("Relu", [y])

    x = conv("input.1", 3, 8, 5, 2)  # 56
    x = conv(x, 8, 16, 3, 2)  # 28
    x = conv(x, 16, 16, 3, 2)  # 14
    x = g.op("AveragePool", [x], kernel_shape=[3, 3], strides=[3, 3])  # 4×4
    flat = g.op("Flatten", [x], axis=1)
    features = 16 * 4 * 4
    w = rng.normal(0, 1.0 / features**0.5, (features, EMBEDDING_DIM)).astype(np.float32)
    out = g.op("Gemm", [flat, g.const(w), g.const(np.zeros(EMBEDDING_DIM))], output="fc1")
    graph = helper.make_graph(
        g.nodes,
        "tiny_arcface",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["batch", 3, 112, 112])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["batch", EMBEDDING_DIM])],
        g.inits,
    )
    return _finish(graph)


def _finish(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # readable by onnxruntime releases back to 1.11
    onnx.checker.check_model(model)
    return model
