"""Checks on an uploaded face photo, before anything is stored. Pure: bytes in, JPEG bytes or an
IdentityBodyError out.

Order: size cap → type sniffed from the magic bytes (never the file name or the client's
Content-Type) → from the header alone: the pixel cap (decompression bombs; a JPEG may have more
pixels, since it is decoded at a reduced scale), animation, min side → then one of two paths:

- an upright RGB JPEG whose full decode fits ``max_decode_bytes`` is stored as it came, less its
  metadata, cut byte-wise (``api.jpeg_segments``: EXIF, GPS, XMP, ICC, comments, trailing images);
  what is stored is then decoded at 1/8 scale, which reads every byte of its entropy-coded data,
  so a truncated or corrupt file is still refused (~7 ms of CPU for 0.5 MB instead of ~24 ms);
- anything else is decoded (a JPEG at 1/2, 1/4 or 1/8 scale by libjpeg's draft mode when its
  full size would pass ``max_decode_bytes``; other formats at full size, then reduced to fit),
  turned upright by its EXIF orientation, made RGB and encoded as a quality-95 4:4:4 JPEG, which
  carries no metadata.

Why JPEG and not PNG: the stored upload is an internal hand-off to the worker, which resizes the
face far below the photo's size; a q95 4:4:4 JPEG is visually lossless for that and costs ~8 ms to
encode for a 1.5 MP photo where PNG (even at compress_level 1) cost 160-210 ms, most of a submit.

Example::

    image = normalize_upload(data, max_bytes=10 << 20, max_pixels=40_000_000, min_side=64,
                             max_decode_bytes=32 << 20, max_jpeg_pixels=200_000_000)
    image.data, image.content_type, image.width, image.height   # JPEG bytes, "image/jpeg", ...
"""

from __future__ import annotations

import functools
import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from PIL import Image, ImageOps

from api.decode_budget import DecodeBudget, Unbounded
from api.jpeg_segments import strip_metadata
from shared.errors import ErrorCode, IdentityBodyError
from shared.face_images import FIELD, about_photo

# magic bytes -> (media type, the only Pillow decoder allowed to open it)
_JPEG = ("image/jpeg", "JPEG")
_PNG = ("image/png", "PNG")
_WEBP = ("image/webp", "WEBP")
_HEIF = ("image/heic", "HEIF")  # decoded by pi-heif (libheif, decoder only)
_AVIF = ("image/avif", "AVIF")  # decoded by Pillow's own AVIF plugin
# ISO-BMFF brands (the ftyp box) of HEVC-coded HEIF, as phones write it
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}
FORMATS_TEXT = "JPEG, PNG, WebP, HEIC or AVIF"

# what is stored: every upload is a JPEG, whatever it arrived as
STORED_TYPE = "image/jpeg"
_JPEG_QUALITY = 95
DEFAULT_MAX_DECODE_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_JPEG_PIXELS = 200_000_000
_ORIENTATION = 0x0112
_JPEG_SCALES = (1, 2, 4, 8)
# HEIF and AVIF decoders fill their own buffer before Pillow copies it into the image (a HEIC's
# peak was 1.3x the image's size)
_DECODER_COPIES = {"HEIF": 2, "AVIF": 2}
_REDUCIBLE_MODES = ("RGB", "RGBA", "L", "LA", "I", "F")
UNBOUNDED = Unbounded()


@dataclass(frozen=True)
class NormalizedImage:
    data: bytes  # the upright RGB photo as JPEG, no metadata
    width: int
    height: int
    source_type: str  # the media type sniffed from the upload
    content_type: str = STORED_TYPE


def sniff_type(head: bytes) -> tuple[str, str] | None:
    """(media type, Pillow format) from the first 64 bytes, or None when not a format we take.

    Example::

        sniff_type(b"\\xff\\xd8\\xff\\xe0...")   # ("image/jpeg", "JPEG")
    """
    if head.startswith(b"\xff\xd8\xff"):
        return _JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return _PNG
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _WEBP
    brands = _ftyp_brands(head)
    if brands & _AVIF_BRANDS:
        return _AVIF
    if brands & _HEIF_BRANDS:
        return _HEIF
    return None


def _ftyp_brands(head: bytes) -> set[bytes]:
    """The major and compatible brands of an ISO-BMFF file's leading ftyp box (as far as ``head`` holds it)."""
    if len(head) < 12 or head[4:8] != b"ftyp":
        return set()
    box_end = min(int.from_bytes(head[:4], "big"), len(head))
    compatible = [head[i:i + 4] for i in range(16, box_end - 3, 4)]
    return {head[8:12], *compatible}


def size_text(nbytes: int) -> str:
    """A byte count as people read it: "10 MiB", "64 KiB"; the README names limits the same way."""
    if nbytes % (1 << 20) == 0:
        return f"{nbytes >> 20} MiB"
    return f"{nbytes // 1024} KiB"


def check_size(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise IdentityBodyError(
            ErrorCode.FILE_TOO_LARGE,
            f"The photo is larger than {size_text(max_bytes)}. Upload a smaller {FORMATS_TEXT} photo.",
            field=FIELD,
        )
    if size == 0:
        raise IdentityBodyError(ErrorCode.IMAGE_DECODE_FAILED, "The uploaded photo is empty.", field=FIELD)


def normalize_upload(data: bytes, max_bytes: int, max_pixels: int, min_side: int,
                     max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES,
                     max_jpeg_pixels: int = DEFAULT_MAX_JPEG_PIXELS,
                     budget: DecodeBudget | Unbounded = UNBOUNDED) -> NormalizedImage:
    """Run every check on ``data`` and return it as an upright RGB JPEG without metadata; decodes
    hold their decoded size of ``budget`` (the gateway's per-process bound on decode memory)."""
    check_size(len(data), max_bytes)
    sniffed = sniff_type(data[:64])
    if sniffed is None:
        raise IdentityBodyError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            f"The photo must be a {FORMATS_TEXT} image (checked from its content, not its name).",
            field=FIELD,
        )
    media_type, pil_format = sniffed
    too_large = _too_many_pixels(max_pixels, max_jpeg_pixels, pil_format)
    with _decode_errors(too_large):
        image = _open_header(data, pil_format, max_jpeg_pixels if pil_format == "JPEG" else max_pixels,
                             min_side, too_large)
        stripped = _stripped_upright_jpeg(data, image, max_decode_bytes)
        if stripped is not None:
            with budget.reserve(_decoded_bytes_at(image, 8)):
                _check_entropy_data(stripped, image.size)
            return NormalizedImage(stripped, image.width, image.height, media_type)
        scale = _jpeg_scale(image, max_decode_bytes) if pil_format == "JPEG" else 1
        with budget.reserve(_decoded_bytes_at(image, scale) * _DECODER_COPIES.get(pil_format, 1)):
            if scale > 1:
                image.draft(image.mode, (-(-image.width // scale), -(-image.height // scale)))
            image.load()
            ImageOps.exif_transpose(image, in_place=True)  # a copy only when the photo must turn
            rgb = _to_rgb(_reduced_to_fit(image, max_decode_bytes))
            return NormalizedImage(encode_jpeg(rgb), rgb.width, rgb.height, media_type)


def normalize_uploads(photos: list[bytes], max_bytes: int, max_pixels: int, min_side: int,
                      max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES,
                      max_jpeg_pixels: int = DEFAULT_MAX_JPEG_PIXELS,
                      budget: DecodeBudget | Unbounded = UNBOUNDED) -> list[NormalizedImage]:
    """``normalize_upload`` for each of a job's face photos, in order; an error about one of
    several names it (``face_image[2]``, "Photo 2 of 3: ...": shared.face_images).

    Example::

        normalize_uploads([front, side], max_bytes=10 << 20, max_pixels=40_000_000, min_side=64)
    """
    checked = []
    for index, data in enumerate(photos):
        try:
            checked.append(normalize_upload(data, max_bytes, max_pixels, min_side, max_decode_bytes,
                                            max_jpeg_pixels, budget))
        except IdentityBodyError as exc:
            raise about_photo(exc, index, len(photos)) from None
    return checked


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
    return _decoded_bytes_at(image, 1)


def _decoded_bytes_at(image: Image.Image, scale: int) -> int:
    bands = len(image.getbands())
    per_pixel = 4 if bands > 1 else _single_band_bytes(image.mode)
    return -(-image.width // scale) * -(-image.height // scale) * per_pixel


def _single_band_bytes(mode: str) -> int:
    if mode in ("I", "F") or mode.startswith("I;32"):
        return 4
    if mode.startswith("I;16"):
        return 2
    return 1


def _jpeg_scale(image: Image.Image, max_decode_bytes: int) -> int:
    """The smallest DCT scale (1, 2, 4 or 8) whose decode fits ``max_decode_bytes``; 8 at worst,
    which the JPEG pixel cap keeps small (200 Mpx at 1/8 is 12.5 MB)."""
    return next((s for s in _JPEG_SCALES if _decoded_bytes_at(image, s) <= max_decode_bytes), _JPEG_SCALES[-1])


def _reduced_to_fit(image: Image.Image, max_decode_bytes: int) -> Image.Image:
    """A photo decoded larger than ``max_decode_bytes`` (a PNG, WebP, HEIC or AVIF cannot be decoded
    smaller) reduced by the smallest whole factor that fits: what is stored and what the worker
    decodes stay within the same bound as a JPEG."""
    factor = 1
    while _decoded_bytes_at(image, factor) > max_decode_bytes:
        factor += 1
    if factor == 1:
        return image
    if image.mode not in _REDUCIBLE_MODES:
        image = _to_rgb(image)
    return image.reduce(factor)  # before the RGB conversion: the copies it makes are small ones


def _open_header(data: bytes, pil_format: str, max_pixels: int, min_side: int,
                 too_large: IdentityBodyError) -> Image.Image:
    """The photo opened (header only) once the pixel cap, animation and min side pass."""
    if pil_format == "HEIF":
        _register_heif()
    _allow_pillow_pixels(max_pixels)
    image = Image.open(io.BytesIO(data), formats=[pil_format])
    if image.width * image.height > max_pixels:
        raise too_large
    if getattr(image, "is_animated", False) or getattr(image, "n_frames", 1) > 1:
        raise IdentityBodyError(
            ErrorCode.ANIMATED_IMAGE,
            "Animated images are not accepted. Upload a single still photo.",
            field=FIELD,
        )
    if min(image.size) < min_side:  # orientation swaps the sides, never changes the shorter one
        raise IdentityBodyError(
            ErrorCode.IMAGE_TOO_SMALL,
            f"The photo is {image.width}x{image.height} pixels; both sides must be at least {min_side}.",
            field=FIELD,
        )
    return image


def _stripped_upright_jpeg(data: bytes, image: Image.Image, max_decode_bytes: int) -> bytes | None:
    """``data`` less its metadata when it can be stored without decoding: an RGB (YCbCr) JPEG that
    needs no turning and that the worker can decode whole within the same bound; else None."""
    if image.format != "JPEG" or image.mode != "RGB" or decoded_bytes(image) > max_decode_bytes:
        return None
    if image.getexif().get(_ORIENTATION, 1) != 1:
        return None
    return strip_metadata(data)


def _check_entropy_data(stripped: bytes, size: tuple[int, int]) -> None:
    """Decode what will be stored at 1/8 scale: libjpeg still reads every coefficient, so a cut or
    broken scan fails here as it would in a full decode."""
    image = Image.open(io.BytesIO(stripped), formats=["JPEG"])
    if image.size != size or image.mode != "RGB":
        raise OSError("the stripped JPEG differs from the upload's header")
    image.draft("RGB", (-(-image.width // 8), -(-image.height // 8)))
    image.load()


@functools.cache
def _register_heif() -> None:
    # the gateway's only HEIF dependency, loaded with the first HEIC
    from pi_heif import register_heif_opener

    register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)


def _allow_pillow_pixels(max_pixels: int) -> None:
    """Pillow's own bomb check is one process-wide number (89 Mpx, an error past twice that); ours
    is per format and runs right after the header is read, so Pillow's is raised to let a JPEG
    reach the JPEG cap. It only ever goes up."""
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels


def _too_many_pixels(max_pixels: int, max_jpeg_pixels: int, pil_format: str) -> IdentityBodyError:
    if pil_format == "JPEG":
        text = f"The photo has more than {max_jpeg_pixels:,} pixels. Upload a smaller image."
    else:
        text = (f"The photo has more than {max_pixels:,} pixels (a JPEG may have up to {max_jpeg_pixels:,}). "
                "Upload a smaller image or a JPEG.")
    return IdentityBodyError(ErrorCode.IMAGE_TOO_LARGE, text, field=FIELD)


@contextmanager
def _decode_errors(too_large: IdentityBodyError) -> Iterator[None]:
    """Pillow's and the decoders' failures as the upload's error codes."""
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb check warns below its error threshold: the warning is the error it
            # is meant to be
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise too_large from None
    except IdentityBodyError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, RuntimeError, Image.UnidentifiedImageError):
        raise IdentityBodyError(
            ErrorCode.IMAGE_DECODE_FAILED,
            "The photo could not be decoded; it may be truncated or corrupt. Upload it again.",
            field=FIELD,
        ) from None


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


@contextmanager
def reported_as(field: str) -> Iterator[None]:
    """Run the checks on another file field's photo (``pose_image``): their errors name ``field``.

    Example::

        with reported_as("pose_image"):
            normalize_upload(pose_bytes, **limits)
    """
    try:
        yield
    except IdentityBodyError as exc:
        exc.field = field
        raise
