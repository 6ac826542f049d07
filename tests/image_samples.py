"""Image bytes for upload tests, made with Pillow (no files in the repository)."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def encode(image: Image.Image, fmt: str, **save: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **save)
    return out.getvalue()


def photo(width: int = 160, height: int = 120, fmt: str = "JPEG") -> bytes:
    """A still image whose left half is red and right half blue, so orientation is checkable."""
    image = Image.new("RGB", (width, height), (220, 30, 30))
    image.paste((30, 30, 220), (width // 2, 0, width, height))
    return encode(image, fmt)


def rotated_jpeg(width: int = 160, height: int = 120, orientation: int = 6) -> bytes:
    """A JPEG stored sideways with an EXIF Orientation tag (6: display rotated 90° clockwise)."""
    image = Image.new("RGB", (width, height), (220, 30, 30))
    image.paste((30, 30, 220), (width // 2, 0, width, height))
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "CameraMaker"  # Make: must not survive re-encoding
    return encode(image, "JPEG", exif=exif.tobytes())


def animated(fmt: str, frames: int = 3, size: int = 96) -> bytes:
    images = [Image.new("RGB", (size, size), (i * 80, 0, 0)) for i in range(frames)]
    return encode(images[0], fmt, save_all=True, append_images=images[1:], duration=100, loop=0)


def bomb_png(width: int, height: int) -> bytes:
    """A few-hundred-byte PNG whose header claims width x height grey pixels (a decompression bomb:
    the first rows compress to almost nothing; decoding would need width*height bytes)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width + 1) * 4)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def corrupt_jpeg() -> bytes:
    data = photo(320, 240)
    return data[: len(data) // 2]


def uniform_jpeg(size: tuple[int, int] = (512, 512), gray: int = 128) -> bytes:
    """A valid photo with no face in it."""
    return encode(Image.new("RGB", size, (gray, gray, gray)), "JPEG", quality=92)


def halves(width: int, height: int) -> Image.Image:
    """Red left half, blue right half: the picture ``photo`` encodes."""
    image = Image.new("RGB", (width, height), (220, 30, 30))
    image.paste((30, 30, 220), (width // 2, 0, width, height))
    return image


def heic(width: int = 160, height: int = 120, orientation: int | None = None) -> bytes:
    """A real HEIC (HEVC-coded HEIF, as iPhones save photos), encoded here by pillow-heif."""
    import pillow_heif  # a test dependency: the gateway itself only decodes (pi-heif)

    heif = pillow_heif.from_pillow(halves(width, height))
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        heif.info["exif"] = exif.tobytes()
    out = io.BytesIO()
    heif.save(out, quality=90)
    return out.getvalue()


def phone_jpeg(width: int, height: int) -> bytes:
    """A camera-sized JPEG (e.g. 8064x6048, 48 MP) of the red/blue halves, made at test time."""
    return encode(halves(width, height), "JPEG", quality=85)
