"""Real face photos for tests: the two samples that ship inside the insightface wheel, found
through the installed package (no image files in this repository).

- ``t1.jpg``: a group photo, 1280×886, six people;
- ``Tom_Hanks_54745.png``: insightface's 112 px aligned crop of one face.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

# The faces of t1.jpg, boxed by hand from forehead to chin (x1, y1, x2, y2).
T1_FACES = [
    (60, 265, 170, 385),
    (270, 150, 380, 265),
    (460, 270, 590, 400),
    (740, 335, 865, 470),
    (910, 55, 1030, 180),
    (1140, 275, 1250, 390),
]


def sample_images() -> Path:
    import insightface

    return Path(insightface.__file__).parent / "data" / "images"


def tom(size: int = 448) -> Image.Image:
    """Tom Hanks' face, enlarged from the 112 px crop (uploads are larger than that)."""
    return Image.open(sample_images() / "Tom_Hanks_54745.png").convert("RGB").resize((size, size), Image.BICUBIC)


def tom_jpeg(size: int = 448) -> bytes:
    buffer = io.BytesIO()
    tom(size).save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def t1() -> Image.Image:
    return Image.open(sample_images() / "t1.jpg").convert("RGB")


def iou(a, b) -> float:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
