"""Small ONNX stand-ins for antelopev2's detector and recognizer, built offline by the project and
run by insightface's own model zoo (the file names and graph signatures route them to SCRFD and
ArcFaceONNX exactly as the released files are routed).

The detector is a real, if crude, face detector. At each SCRFD stride (8/16/32) and for two face
sizes per stride (its two anchors), a window of the size of a face (insightface's canonical
112×112 alignment crop, forehead to chin) is cut into a grid of about 11-18 cells and scored by
cues that must ALL hold at once:

- contrasts, each as an effect size (difference of two region means over the window's own
  standard deviation, so the lighting level and the contrast of the photo cancel): each eye darker
  than the cheek below it and than the bridge of the nose, the brow band darker than the forehead,
  the mouth darker than the cheeks;
- the eyes alike (eye-pair symmetry), measured against the eye-to-cheek contrast;
- structure at the face's own scale: the variance of the cell means must be a large share of the
  pixel variance in the window, which pixel noise (uniform, gaussian, salt-and-pepper), fine
  stripes and fine texture never reach, since their variance averages out inside each cell;
- enough contrast at all (flat or uniform regions never match);
- a skin-like or grey chroma in the middle of the face (red at least as strong as green and blue);
- the window lies inside the picture (insightface pads with black, which must not pose as hair).

The score is a sigmoid of the weakest cue's margin; insightface's own NMS merges the neighbours.
Boxes are the window, keypoints the canonical alignment points inside it.

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

from worker.models.layout import DETECTOR_FILE, RECOGNIZER_FILE

OPSET = 17
STRIDES = (8, 16, 32)
# Per stride, two anchors as (grid step in px, cells per window side): the window is step·cells
# px (56, 88, 112, 176, 288 and 448 px at the detector's 640 input); neighbouring sizes overlap
# enough for NMS to merge duplicates. The step divides the stride, so a strided conv lands the
# window on SCRFD's grid; 11-18 cells give each face region several cells to average over.
ANCHORS: dict[int, tuple[tuple[int, int], tuple[int, int]]] = {
    8: ((4, 14), (8, 11)),
    16: ((8, 14), (16, 11)),
    32: ((16, 18), (32, 14)),
}
# The window inside the canonical 112×112 crop (x0, y0, side): forehead to chin.
WINDOW = (12, 18, 88)
# Face regions in the canonical crop: (centre x, y), (width, height).
REGIONS: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "left_eye": ((38, 52), (20, 12)),
    "right_eye": ((74, 52), (20, 12)),
    "bridge": ((56, 52), (10, 12)),
    "left_cheek": ((36, 72), (20, 12)),
    "right_cheek": ((76, 72), (20, 12)),
    "mouth": ((56, 92), (28, 8)),
    "forehead": ((56, 28), (50, 12)),
}
# (brighter regions, darker regions): every one must hold for a face. Comparing regions on the
# same side keeps them valid under side lighting.
CONTRASTS: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("left_cheek",), ("left_eye",)),
    (("right_cheek",), ("right_eye",)),
    (("bridge",), ("left_eye",)),
    (("bridge",), ("right_eye",)),
    (("forehead",), ("left_eye", "right_eye")),
    (("left_cheek", "right_cheek"), ("mouth",)),
)
# Where the chroma is read: the middle of the face.
SKIN_REGIONS = ("left_cheek", "right_cheek", "bridge")
# Regions that are plain skin: little variance inside them.
SMOOTH_REGIONS = ("left_cheek", "right_cheek", "forehead")
# Each cue as (name, threshold, scale): margin = (value - threshold) / scale; a face needs every
# margin above 0 and its score is sigmoid(SHARPNESS · weakest margin).
CUES: tuple[tuple[str, float, float], ...] = (
    *((f"contrast_{i}", 0.25, 1.0) for i in range(len(CONTRASTS))),  # effect sizes
    ("eye_symmetry", 0.15, 1.0),  # effect size
    ("structure", 0.78, 0.2),  # cell variance / pixel variance
    ("smooth", 0.65, 0.3),  # 1 - (variance inside cheeks and forehead) / cell variance
    ("std", 0.1, 0.4),  # of the cell means, input units (about [-1, 1])
    ("red_over_green", -0.03, 0.06),  # input units; grey photos sit at 0
    ("red_over_blue", -0.03, 0.06),
    ("inside", 0.9, 0.2),  # share of the window on the picture
)
SHARPNESS = 8.0
# Luminance just above insightface's black padding, in the detector's input units.
PADDING_LEVEL = -0.99
# insightface's ArcFace alignment targets in a 112×112 crop (eyes, nose tip, mouth corners).
CANONICAL_KPS = np.array(
    [[38.29, 51.70], [73.53, 51.50], [56.03, 71.74], [41.55, 92.37], [70.73, 92.20]],
    dtype=np.float32,
)
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


def build_detector(expose_cues: bool = False) -> onnx.ModelProto:
    """SCRFD-signature graph: input [1,3,H,W]; outputs score (N,1) ×3, bbox (N,4) ×3, kps (N,10) ×3.

    ``expose_cues`` adds each anchor's raw cue values as extra outputs (``cues_<stride>_<anchor>``,
    shape (1, len(CUES), h, w)) for calibration; the written model never has them.
    """
    g = _Graph()
    pyramid = _cell_pyramid(g)
    thresholds = g.const(np.array([t for _, t, _ in CUES], np.float32).reshape(1, -1, 1, 1))
    gains = g.const(np.array([SHARPNESS / s for _, _, s in CUES], np.float32).reshape(1, -1, 1, 1))
    scores, boxes, points, extra = [], [], [], []
    for stride in STRIDES:
        per_anchor = []
        for index, (step, cells) in enumerate(ANCHORS[stride]):
            cues = _anchor_cues(g, pyramid[step], stride, step, cells)
            margin = g.op("ReduceMin", [g.op("Mul", [g.op("Sub", [cues, thresholds]), gains])], axes=[1], keepdims=1)
            per_anchor.append(g.op("Sigmoid", [margin]))
            if expose_cues:
                extra.append(g.op("Identity", [cues], output=f"cues_{stride}_{index}"))
        score = g.op("Concat", per_anchor, axis=1)
        grid = g.op("Slice", [pyramid[stride], *_ints(g, [3], [4], [1])])  # luminance
        scores.append(_flatten(g, score, 1, f"score_{stride}"))
        boxes.append(_flatten(g, _constant_map(g, grid, _box_offsets(stride)), 4, f"bbox_{stride}"))
        points.append(_flatten(g, _constant_map(g, grid, _kps_offsets(stride)), 10, f"kps_{stride}"))
    outputs = [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, [f"n{name}", width])
        for name, width in zip(scores + boxes + points, [1] * 3 + [4] * 3 + [10] * 3)
    ]
    outputs += [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, len(CUES), f"h{name}", f"w{name}"])
        for name in extra
    ]
    graph = helper.make_graph(
        g.nodes,
        "tiny_scrfd",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "height", "width"])],
        outputs,
        g.inits,
    )
    return _finish(graph)


def region_kernels(cells: int) -> dict[str, np.ndarray]:
    """Each face region as a (cells, cells) averaging kernel over the window (sums to 1)."""
    kernels = {}
    for name, ((cx, cy), (w, h)) in REGIONS.items():
        canvas = np.zeros((112, 112), np.float32)
        canvas[int(cy - h / 2) : int(cy + h / 2), int(cx - w / 2) : int(cx + w / 2)] = 1.0
        x0, y0, side = WINDOW
        mask = cv2.resize(canvas[y0 : y0 + side, x0 : x0 + side], (cells, cells), interpolation=cv2.INTER_AREA)
        kernels[name] = mask / mask.sum()
    return kernels


def _cell_pyramid(g: _Graph) -> dict[int, str]:
    """Per grid step (4…32 px), the cell means of (R, G, B, luminance, luminance², lit), where lit
    is 1 off insightface's black padding. The per-pixel work happens once, at full resolution; the
    coarser steps average the finer ones (exact, as the cells nest)."""
    rgb_to_gray = np.array([0.299, 0.587, 0.114], np.float32).reshape(1, 3, 1, 1)  # input is RGB
    gray = g.op("Conv", ["input.1", g.const(rgb_to_gray)])
    gray_sq = g.op("Mul", [gray, gray])
    # insightface pads the resized photo with black (-127.5/128): a window reaching into that
    # padding (or past the tensor) is not inside the picture
    lit = g.op("Cast", [g.op("Greater", [gray, g.const(PADDING_LEVEL)])], to=TensorProto.FLOAT)
    stacked = g.op("Concat", ["input.1", gray, gray_sq, lit], axis=1)
    steps = sorted({step for anchors in ANCHORS.values() for step, _ in anchors} | set(STRIDES))
    pyramid = {steps[0]: _pool(g, stacked, steps[0])}
    for finer, step in zip(steps, steps[1:]):
        pyramid[step] = _pool(g, pyramid[finer], step // finer)
    return pyramid


def _anchor_cues(g: _Graph, cells_in: str, stride: int, step: int, cells: int) -> str:
    """The raw cue values of every window of ``step·cells`` px on the stride grid, (1, len(CUES), h, w)."""
    channel = lambda first, last: g.op("Slice", [cells_in, *_ints(g, [first], [last], [1])])
    cell_rgb, cell_mean, cell_sq, cell_lit = channel(0, 3), channel(3, 4), channel(4, 5), channel(5, 6)
    window = _window_conv(stride, step, cells)

    kernels = region_kernels(cells)
    names = list(REGIONS)
    uniform = np.full((cells, cells), 1.0 / cells**2, np.float32)
    bank = np.stack([kernels[n] for n in names] + [uniform])[:, None]
    means = g.op("Conv", [cell_mean, g.const(bank)], **window)  # regions…, window mean
    mean = g.op("Slice", [means, *_ints(g, [len(names)], [len(names) + 1], [1])])
    regions = g.op("Slice", [means, *_ints(g, [0], [len(names)], [1])])
    uniform_k = g.const(uniform[None, None])
    cell_var = g.op("Relu", [g.op("Sub", [g.op("Conv", [g.op("Mul", [cell_mean, cell_mean]), uniform_k], **window), g.op("Mul", [mean, mean])])])
    pixel_var = g.op("Relu", [g.op("Sub", [g.op("Conv", [cell_sq, uniform_k], **window), g.op("Mul", [mean, mean])])])
    std = g.op("Sqrt", [cell_var])
    inv_std = g.op("Reciprocal", [g.op("Add", [std, g.const(1e-3)])])

    contrast = np.zeros((len(CONTRASTS), len(names)), np.float32)
    for row, (bright, dark) in enumerate(CONTRASTS):
        for r in bright:
            contrast[row, names.index(r)] += 1.0 / len(bright)
        for r in dark:
            contrast[row, names.index(r)] -= 1.0 / len(dark)
    diffs = g.op("Conv", [regions, g.const(contrast[:, :, None, None])])
    # eye symmetry: the eyes' mean contrast to cheeks and bridge must exceed their difference
    eyes = np.zeros((2, len(names)), np.float32)
    eyes[0, [names.index("left_cheek"), names.index("right_cheek"), names.index("bridge")]] = [0.25, 0.25, 0.5]
    eyes[0, [names.index("left_eye"), names.index("right_eye")]] = -0.5
    eyes[1, names.index("left_eye")], eyes[1, names.index("right_eye")] = 1.0, -1.0
    eye_terms = g.op("Conv", [regions, g.const(eyes[:, :, None, None])])
    eye_contrast = g.op("Slice", [eye_terms, *_ints(g, [0], [1], [1])])
    eye_gap = g.op("Abs", [g.op("Slice", [eye_terms, *_ints(g, [1], [2], [1])])])
    symmetry = g.op("Sub", [eye_contrast, eye_gap])
    effects = g.op("Mul", [g.op("Concat", [diffs, symmetry], axis=1), inv_std])

    structure = g.op("Div", [cell_var, g.op("Add", [pixel_var, g.const(1e-4)])])

    # smooth skin: the variance inside cheeks and forehead is a small share of the window's
    smooth_bank = np.stack([kernels[n] for n in SMOOTH_REGIONS])[:, None]
    inner_sq = g.op("Conv", [g.op("Mul", [cell_mean, cell_mean]), g.const(smooth_bank)], **window)
    picked = [names.index(n) for n in SMOOTH_REGIONS]
    inner_mean = g.op("Gather", [regions, g.const(np.array(picked), np.int64)], axis=1)
    inner_var = g.op("Relu", [g.op("Sub", [inner_sq, g.op("Mul", [inner_mean, inner_mean])])])
    inner_share = g.op("Div", [g.op("ReduceMean", [inner_var], axes=[1], keepdims=1), g.op("Add", [cell_var, g.const(1e-4)])])
    smooth = g.op("Sub", [g.const(1.0), inner_share])

    skin = sum(kernels[n] for n in SKIN_REGIONS) / len(SKIN_REGIONS)
    chroma = np.zeros((2, 3, cells, cells), np.float32)
    chroma[0, 0], chroma[0, 1] = skin, -skin  # red - green
    chroma[1, 0], chroma[1, 2] = skin, -skin  # red - blue
    red_over = g.op("Conv", [cell_rgb, g.const(chroma)], **window)

    inside = g.op("Conv", [cell_lit, uniform_k], **window)  # zero-padded beyond the edges
    return g.op("Concat", [effects, structure, smooth, std, red_over, inside], axis=1)


def _window_conv(stride: int, step: int, cells: int) -> dict:
    """Conv attributes that put a ``cells``-wide window on every stride cell: output (i, j) covers
    cells i·m - cells//2 … i·m - cells//2 + cells - 1 (m = stride / step), and there are exactly
    H / stride outputs, as SCRFD's anchor grid expects."""
    before = cells // 2
    after = cells - before - 1
    return {"pads": [before, before, after, after], "strides": [stride // step] * 2}


def _pool(g: _Graph, x: str, step: int) -> str:
    return g.op("AveragePool", [x], kernel_shape=[step, step], strides=[step, step])


def _ints(g: _Graph, *values: list[int]) -> list[str]:
    return [g.const(np.array(v), np.int64) for v in values] + [g.const(np.array([1]), np.int64)]


def _box_offsets(stride: int) -> np.ndarray:
    # SCRFD's anchor sits at (j·stride, i·stride); the window starts cells//2 grid steps before it.
    rows = []
    for step, cells in ANCHORS[stride]:
        before, after = (cells // 2) * step, (cells - cells // 2) * step
        rows.append([before, before, after, after])
    return np.array(rows, np.float32) / stride  # (anchors, 4) in stride units: left, top, right, bottom


def _kps_offsets(stride: int) -> np.ndarray:
    rows = []
    x0, y0, side = WINDOW
    relative = (CANONICAL_KPS - [x0, y0]) / side  # in window sides, from its top-left corner
    for step, cells in ANCHORS[stride]:
        offsets = relative * cells * step - (cells // 2) * step
        rows.append(offsets.reshape(-1))
    return np.array(rows, np.float32) / stride  # (anchors, 10): dx, dy per point in stride units


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
