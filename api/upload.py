"""Checks on an uploaded face photo, before anything is stored. Pure: bytes in, JPEG bytes or an
IdentityBodyError out.

Order: size cap → type sniffed from the magic bytes (never the file name or the client's
Content-Type) → header-only pixel cap (decompression bombs) → header-only memory cap (width x
height x bytes per pixel, ``max_decode_bytes``: a JPEG above it is decoded at 1/2, 1/4 or 1/8
scale by libjpeg's draft mode, anything else is refused before a byte is allocated) → animation
→ full decode →
EXIF orientation → min side → RGB → JPEG re-encode at quality 95 without chroma subsampling
(drops EXIF, GPS, ICC, comments and every other metadata).

Why JPEG and not PNG: the stored upload is an internal hand-off to the worker, which resizes the
face far below the photo's size; a q95 4:4:4 JPEG is visually lossless for that and costs ~8 ms to
encode for a 1.5 MP photo where PNG (even at compress_level 1) cost 160-210 ms, most of a submit.

Example::

    image = normalize_upload(data, max_bytes=10 << 20, max_pixels=40_000_000, min_side=64,
                             max_decode_bytes=32 << 20)
    image.data, image.content_type, image.width, image.height   # JPEG bytes, "image/jpeg", ...
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

# what is stored: every upload is re-encoded to this, whatever it arrived as
STORED_TYPE = "image/jpeg"
_JPEG_QUALITY = 95
DEFAULT_MAX_DECODE_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class NormalizedImage:
    data: bytes  # the upright RGB photo as JPEG, no metadata
    width: int
    height: int
    source_type: str  # the media type sniffed from the upload
    content_type: str = STORED_TYPE


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


def normalize_upload(data: bytes, max_bytes: int, max_pixels: int, min_side: int,
                     max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES) -> NormalizedImage:
    """Run every check on ``data`` and return it as an upright RGB JPEG without metadata."""
    check_size(len(data), max_bytes)
    sniffed = sniff_type(data[:16])
    if sniffed is None:
        raise IdentityBodyError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            "The photo must be a JPEG, PNG or WebP image (checked from its content, not its name).",
            field=FIELD,
        )
    media_type, pil_format = sniffed
    image = _decode(data, pil_format, max_pixels, max_decode_bytes)
    image = ImageOps.exif_transpose(image)
    if min(image.size) < min_side:
        raise IdentityBodyError(
            ErrorCode.IMAGE_TOO_SMALL,
            f"The photo is {image.width}x{image.height} pixels; both sides must be at least {min_side}.",
            field=FIELD,
        )
    rgb = _to_rgb(image)
    return NormalizedImage(encode_jpeg(rgb), rgb.width, rgb.height, media_type)


def encode_jpeg(rgb: Image.Image) -> bytes:
    """``rgb`` as a quality-95 JPEG with full-resolution chroma (4:4:4) and no metadata at all.

    Pillow writes EXIF/ICC only when asked, but copies a decoded JPEG's comment from ``info``:
    an empty comment and no extra markers keep everything the client sent out of storage.

    Example::

        encode_jpeg(Image.new("RGB", (64, 64)))[:3]   # b"\\xff\\xd8\\xff"
    """
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=_JPEG_QUALITY, subsampling=0, comment=b"", exif=b"", optimize=False)
    return out.getvalue()


def decoded_bytes(image: Image.Image) -> int:
    """What decoding ``image`` (opened, not loaded) allocates, from its header alone: Pillow keeps
    every multi-band mode at 4 bytes a pixel (RGB too), single bands at their own width. A 16-bit
    RGBA PNG is decoded to 8-bit RGBA, so it costs 4 bytes a pixel here as well.

    Example::

        decoded_bytes(Image.open(io.BytesIO(png_6320x6320_rgba16)))   # 159_769_600
    """
    bands = len(image.getbands())
    per_pixel = 4 if bands > 1 else _single_band_bytes(image.mode)
    return image.width * image.height * per_pixel


def _single_band_bytes(mode: str) -> int:
    if mode in ("I", "F") or mode.startswith("I;32"):
        return 4
    if mode.startswith("I;16"):
        return 2
    return 1


def _fit_budget(image: Image.Image, pil_format: str, max_decode_bytes: int, too_large: IdentityBodyError) -> None:
    """Make decoding ``image`` cost at most ``max_decode_bytes``: a JPEG by asking libjpeg for a
    reduced scale (draft), anything else by refusing it. Runs before a pixel is decoded."""
    cost = decoded_bytes(image)
    if cost <= max_decode_bytes:
        return
    if pil_format != "JPEG":
        raise too_large
    for scale in (2, 4, 8):
        if cost // (scale * scale) <= max_decode_bytes:
            image.draft(image.mode, (-(-image.width // scale), -(-image.height // scale)))
            return
    raise too_large


def _decode(data: bytes, pil_format: str, max_pixels: int, max_decode_bytes: int) -> Image.Image:
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
            _fit_budget(image, pil_format, max_decode_bytes, IdentityBodyError(
                ErrorCode.IMAGE_TOO_LARGE,
                f"Decoding the photo ({image.width}x{image.height}, {image.mode}) would take more than "
                f"{max_decode_bytes >> 20} MiB. Upload a smaller image or a JPEG.",
                field=FIELD,
            ))
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
