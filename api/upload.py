"""Checks on an uploaded face photo, before anything is stored. Pure: bytes in, PNG bytes or an
IdentityBodyError out.

Order: size cap → type sniffed from the magic bytes (never the file name or the client's
Content-Type) → header-only pixel cap (decompression bombs) → animation → full decode →
EXIF orientation → min side → RGB → PNG re-encode (drops EXIF, GPS and every other metadata).

Example::

    image = normalize_upload(data, max_bytes=10 << 20, max_pixels=40_000_000, min_side=64)
    image.png, image.width, image.height
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps

from shared.errors import ErrorCode, IdentityBodyError

FIELD = "face_image"

# magic bytes -> (media type, the only Pillow decoder allowed to open it)
_JPEG = ("image/jpeg", "JPEG")
_PNG = ("image/png", "PNG")
_WEBP = ("image/webp", "WEBP")


@dataclass(frozen=True)
class NormalizedImage:
    png: bytes
    width: int
    height: int
    source_type: str  # the media type sniffed from the upload


def sniff_type(head: bytes) -> tuple[str, str] | None:
    """(media type, Pillow format) from the first bytes, or None when not JPEG, PNG or WebP.

    Example::

        sniff_type(b"\\xff\\xd8\\xff\\xe0...")   # ("image/jpeg", "JPEG")
    """
    if head.startswith(b"\xff\xd8\xff"):
        return _JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return _PNG
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _WEBP
    return None


def check_size(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise IdentityBodyError(
            ErrorCode.FILE_TOO_LARGE,
            f"The photo is larger than {max_bytes // 1024} KiB. Upload a smaller JPEG, PNG or WebP.",
            field=FIELD,
        )
    if size == 0:
        raise IdentityBodyError(ErrorCode.IMAGE_DECODE_FAILED, "The uploaded photo is empty.", field=FIELD)


def normalize_upload(data: bytes, max_bytes: int, max_pixels: int, min_side: int) -> NormalizedImage:
    """Run every check on ``data`` and return it as an upright RGB PNG without metadata."""
    check_size(len(data), max_bytes)
    sniffed = sniff_type(data[:16])
    if sniffed is None:
        raise IdentityBodyError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            "The photo must be a JPEG, PNG or WebP image (checked from its content, not its name).",
            field=FIELD,
        )
    media_type, pil_format = sniffed
    image = _decode(data, pil_format, max_pixels)
    image = ImageOps.exif_transpose(image)
    if min(image.size) < min_side:
        raise IdentityBodyError(
            ErrorCode.IMAGE_TOO_SMALL,
            f"The photo is {image.width}x{image.height} pixels; both sides must be at least {min_side}.",
            field=FIELD,
        )
    rgb = _to_rgb(image)
    out = io.BytesIO()
    # compress_level 1: the PNG is an internal hand-off to the worker, speed matters more than size
    rgb.save(out, format="PNG", compress_level=1)
    return NormalizedImage(out.getvalue(), rgb.width, rgb.height, media_type)


def _decode(data: bytes, pil_format: str, max_pixels: int) -> Image.Image:
    bomb = IdentityBodyError(
        ErrorCode.IMAGE_TOO_LARGE,
        f"The photo has more than {max_pixels:,} pixels. Upload a smaller image.",
        field=FIELD,
    )
    corrupt = IdentityBodyError(
        ErrorCode.IMAGE_DECODE_FAILED,
        "The photo could not be decoded; it may be truncated or corrupt. Upload it again.",
        field=FIELD,
    )
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb check (a process-wide limit) warns below its error threshold:
            # treat the warning as the error it is meant to be
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[pil_format])  # reads the header only
            if image.width * image.height > max_pixels:
                raise bomb
            if getattr(image, "is_animated", False) or getattr(image, "n_frames", 1) > 1:
                raise IdentityBodyError(
                    ErrorCode.ANIMATED_IMAGE,
                    "Animated images are not accepted. Upload a single still photo.",
                    field=FIELD,
                )
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise bomb from None
    except IdentityBodyError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, Image.UnidentifiedImageError):
        raise corrupt from None
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB; transparent areas become white rather than whatever colour the hidden pixels had."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")
