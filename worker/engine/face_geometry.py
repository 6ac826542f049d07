"""Pure geometry of the two face-region stages: where the face sits in the base layout (for the
face-region emphasis) and the square crop, feathered mask and paste of the face-detail pass.

No models, no I/O: numbers and arrays in, numbers and arrays out, so every rule here is unit
tested on its own.

Example::

    box = square_crop_box(face.bbox, image.size)                 # (x0, y0, x1, y1), square
    mask = feather_mask(box[2] - box[0])                         # 0 on the crop's border ring
    out = paste_feathered(np.asarray(image), np.asarray(refined), box, mask)
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from numpy.typing import ArrayLike

# The crop is this many times the detected box's longer side: the whole head, some hair and neck,
# so the img2img pass sees the face in context and the feathered edge falls outside the face.
CROP_MARGIN = 1.6
# Width of the feathered band as a share of the crop side: wide enough that no seam shows, narrow
# enough that most of the face is taken from the refined crop at full weight.
FEATHER_FRACTION = 0.12
# The face-region box is the detector's box mapped into the layout, grown by this factor: SDXL's
# deepest level works on 1/32 of the image, where a full-body head box is only ~3 cells wide.
REGION_MARGIN = 1.25

Box = tuple[int, int, int, int]


def square_crop_box(bbox: ArrayLike, image_size: tuple[int, int], margin: float = CROP_MARGIN) -> Box:
    """The square crop (x0, y0, x1, y1), integer pixels, centred on the face box ``bbox``
    (x1, y1, x2, y2) with side ``margin`` × its longer side, moved (never shrunk) to lie inside
    the ``image_size`` (width, height) image; only an image smaller than the square shrinks it.

    Example::

        square_crop_box([100, 40, 140, 90], (256, 384))    # (80, 25, 160, 105)
    """
    x1, y1, x2, y2 = (float(v) for v in np.asarray(bbox, dtype=np.float64).reshape(4))
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"the face box {bbox} is empty")
    width, height = image_size
    side = min(int(round(margin * max(x2 - x1, y2 - y1))), width, height)
    side = max(side, 8)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    x0 = int(round(cx - side / 2))
    y0 = int(round(cy - side / 2))
    x0 = min(max(x0, 0), width - side)
    y0 = min(max(y0, 0), height - side)
    return x0, y0, x0 + side, y0 + side


def feather_mask(side: int, fraction: float = FEATHER_FRACTION) -> np.ndarray:
    """A ``side``×``side`` float32 weight for pasting a refined crop back: 1 in the middle, a
    Gaussian fall-off of width ``fraction``×side, and exactly 0 on the outermost pixel ring, so
    pixels at the crop's edge and beyond are never touched.

    The core (a square inset by the band width) is blurred with a Gaussian whose kernel reaches
    at most band-1 px, so its tail stops one pixel before the border.

    Example::

        m = feather_mask(128)      # m[64, 64] == 1.0, m[0, :] == 0.0
    """
    band = max(2, int(round(side * fraction)))
    if 2 * band >= side:
        raise ValueError(f"a {side} px crop is too small for a {band} px feather")
    core = np.zeros((side, side), dtype=np.float32)
    core[band:side - band, band:side - band] = 1.0
    reach = band - 1
    sigma = max(reach / 3.0, 0.5)
    mask = cv2.GaussianBlur(core, (2 * reach + 1, 2 * reach + 1), sigma, borderType=cv2.BORDER_CONSTANT)
    mask[[0, -1], :] = 0.0
    mask[:, [0, -1]] = 0.0
    return np.clip(mask, 0.0, 1.0)


def paste_feathered(base: np.ndarray, patch: np.ndarray, box: Box, mask: np.ndarray) -> np.ndarray:
    """``base`` (H, W, 3 uint8) with ``patch`` (side, side, 3 uint8) blended in at ``box`` by
    ``mask``: out = base·(1−m) + patch·m. Where m is 0 (the crop's border ring and everything
    outside the box) the result is byte-identical to ``base``.

    Example::

        out = paste_feathered(np.asarray(img), np.asarray(refined.resize((s, s))), box, feather_mask(s))
    """
    x0, y0, x1, y1 = box
    side = x1 - x0
    if patch.shape[:2] != (side, side) or mask.shape != (side, side) or y1 - y0 != side:
        raise ValueError(f"patch {patch.shape[:2]} and mask {mask.shape} must match the {side} px box {box}")
    out = base.copy()
    region = out[y0:y1, x0:x1].astype(np.float32)
    weight = mask[:, :, None]
    blended = region * (1.0 - weight) + patch.astype(np.float32) * weight
    out[y0:y1, x0:x1] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out


def kps_in_crop(kps: ArrayLike, box: Box, working_size: int) -> np.ndarray:
    """Keypoints of a face in the full image, moved into the crop resized to ``working_size``.

    Example::

        kps_in_crop(face.kps, (80, 25, 160, 105), 1024)
    """
    x0, y0, x1, _ = box
    scale = working_size / float(x1 - x0)
    points = np.asarray(kps, dtype=np.float64).reshape(-1, 2)
    return ((points - [x0, y0]) * scale).astype(np.float32)


def layout_face_box(src_kps: ArrayLike, src_bbox: ArrayLike, dst_kps: ArrayLike,
                    size: tuple[int, int], margin: float = REGION_MARGIN) -> tuple[float, float, float, float]:
    """Where the input photo's face box lands in the output layout.

    ``worker.keypoints.retarget_kps`` moves the five keypoints by one uniform scale and a
    translation; the same map is recovered from the two keypoint sets (ratio of their spreads,
    difference of their centroids) and applied to the detector's box, which is then grown by
    ``margin`` about its centre and clipped to ``size`` (width, height).

    Example::

        layout_face_box(face.kps, face.bbox, retargeted, (832, 1216))   # (x1, y1, x2, y2)
    """
    src = np.asarray(src_kps, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst_kps, dtype=np.float64).reshape(-1, 2)
    spread_src = math.sqrt(((src - src.mean(0)) ** 2).sum(1).mean())
    spread_dst = math.sqrt(((dst - dst.mean(0)) ** 2).sum(1).mean())
    if spread_src <= 1e-6:
        raise ValueError("the source keypoints coincide")
    scale = spread_dst / spread_src
    corners = np.asarray(src_bbox, dtype=np.float64).reshape(2, 2)
    mapped = (corners - src.mean(0)) * scale + dst.mean(0)
    centre, half = mapped.mean(0), (mapped[1] - mapped[0]) / 2 * margin
    width, height = size
    x1, y1 = np.maximum(centre - half, 0.0)
    x2, y2 = np.minimum(centre + half, [width, height])
    return float(x1), float(y1), float(x2), float(y2)


def region_mask(size: tuple[int, int], box: tuple[float, float, float, float]) -> np.ndarray:
    """A (height, width) float32 mask: 1 inside ``box`` (x1, y1, x2, y2), 0 outside.

    Example::

        region_mask((832, 1216), (360, 60, 470, 200))
    """
    width, height = size
    mask = np.zeros((height, width), dtype=np.float32)
    x1, y1, x2, y2 = box
    mask[int(math.floor(y1)):int(math.ceil(y2)), int(math.floor(x1)):int(math.ceil(x2))] = 1.0
    return mask
