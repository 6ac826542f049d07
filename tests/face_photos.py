"""Real face photos for tests: the two samples that ship inside the insightface wheel, found
through the installed package (no image files in this repository).

- ``t1.jpg``: a group photo, 1280×886, six people;
- ``Tom_Hanks_54745.png``: insightface's 112 px aligned crop of one face.

The wheel has one photo per person, so a second photo of Tom Hanks is a mirrored, darker copy of
his (``tom_again``: dlib puts it 0.01 from the original, where different people are 0.10-0.20
apart) and another person is one of t1.jpg's faces, enlarged (``stranger``).
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

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


def tom_again(size: int = 448) -> Image.Image:
    """A second photo of Tom Hanks: his, mirrored and in dimmer light."""
    return ImageEnhance.Brightness(ImageOps.mirror(tom(size))).enhance(0.7)


def stranger(index: int = 1, size: int = 448) -> Image.Image:
    """Face ``index`` of t1.jpg with the head around it, enlarged to ``size`` (another person)."""
    x1, y1, x2, y2 = T1_FACES[index]
    margin_x, margin_y = 0.6 * (x2 - x1), 0.6 * (y2 - y1)
    box = (round(x1 - margin_x), round(y1 - margin_y), round(x2 + margin_x), round(y2 + margin_y))
    return t1().crop(box).resize((size, size), Image.BICUBIC)


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def t1() -> Image.Image:
    return Image.open(sample_images() / "t1.jpg").convert("RGB")


def iou(a, b) -> float:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
