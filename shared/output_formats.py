"""Output image formats: how a generated image is encoded, the Content-Type it is stored and served
with, and the file name extension, written once for the worker, the storage keys, ``idbody
generate`` and ``GET /api/v1/info``.

Example::

    encoded = encode_image(image, "webp", quality=85)
    encoded.content_type, encoded.extension     # "image/webp", "webp"
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Literal, get_args

from PIL import Image

OutputFormat = Literal["png", "jpeg", "webp"]
DEFAULT_FORMAT: OutputFormat = "png"
# lossy formats' quality when the job names none: visually clean, a fraction of the PNG's size
DEFAULT_QUALITY = 90


@dataclass(frozen=True)
class FormatSpec:
    name: str
    pil_format: str
    content_type: str
    extension: str
    lossy: bool
    description: str


FORMATS: dict[str, FormatSpec] = {spec.name: spec for spec in (
    FormatSpec("png", "PNG", "image/png", "png", False, "Lossless; the largest files."),
    FormatSpec("jpeg", "JPEG", "image/jpeg", "jpg", True, "Lossy; output_quality 1-100 (default 90)."),
    FormatSpec("webp", "WEBP", "image/webp", "webp", True, "Lossy; output_quality 1-100 (default 90)."),
)}


@dataclass(frozen=True)
class EncodedImage:
    data: bytes
    content_type: str
    extension: str


def encode_image(image: Image.Image, output_format: str = DEFAULT_FORMAT, quality: int | None = None) -> EncodedImage:
    """``image`` encoded as ``output_format``; ``quality`` applies to the lossy formats only."""
    spec = FORMATS[output_format]
    options: dict[str, int] = {"quality": int(quality or DEFAULT_QUALITY)} if spec.lossy else {}
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format=spec.pil_format, **options)
    return EncodedImage(buf.getvalue(), spec.content_type, spec.extension)


def format_list() -> list[dict[str, object]]:
    """What ``GET /api/v1/info`` lists as ``output_formats``."""
    return [{"name": FORMATS[name].name, "content_type": FORMATS[name].content_type,
             "extension": FORMATS[name].extension, "lossy": FORMATS[name].lossy,
             "description": FORMATS[name].description} for name in get_args(OutputFormat)]
