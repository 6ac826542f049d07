"""Upload checks as pure functions: bytes in, an upright RGB JPEG (q95, 4:4:4, no metadata) or a coded error out."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageChops, ImageStat, JpegImagePlugin

from api.upload import normalize_upload, sniff_type
from shared.errors import ErrorCode, IdentityBodyError
from tests import image_samples as samples

LIMITS = {"max_bytes": 2 * 1024 * 1024, "max_pixels": 4_000_000, "min_side": 64}


def _error(data: bytes, **limits) -> IdentityBodyError:
    with pytest.raises(IdentityBodyError) as info:
        normalize_upload(data, **{**LIMITS, **limits})
    assert info.value.field == "face_image"
    return info.value


@pytest.mark.parametrize("fmt,media", [("JPEG", "image/jpeg"), ("PNG", "image/png"), ("WEBP", "image/webp")])
def test_accepted_formats_become_rgb_jpeg(fmt, media):
    image = normalize_upload(samples.photo(fmt=fmt), **LIMITS)
    assert image.source_type == media and image.content_type == "image/jpeg"
    decoded = Image.open(io.BytesIO(image.data))
    assert decoded.format == "JPEG" and decoded.mode == "RGB" and decoded.size == (160, 120)
    # 4:4:4: the colour planes are not halved (faces keep their skin-tone detail)
    assert JpegImagePlugin.get_sampling(decoded) == 0


def test_stored_jpeg_is_close_to_the_upload():
    original = Image.open(io.BytesIO(samples.photo(fmt="PNG"))).convert("RGB")
    stored = Image.open(io.BytesIO(normalize_upload(samples.encode(original, "PNG"), **LIMITS).data))
    diff = ImageChops.difference(original, stored.convert("RGB"))
    mean_error = sum(ImageStat.Stat(diff).mean) / 3
    assert mean_error < 3.0  # quality 95: a few levels out of 255 at most


def test_sniffing_ignores_names_and_refuses_others():
    assert sniff_type(b"GIF89a....") is None
    assert sniff_type(b"hello, I am a .jpg") is None
    assert sniff_type(b"RIFF\x00\x00\x00\x00WAVE") is None
    assert sniff_type(samples.photo(fmt="PNG")[:16])[0] == "image/png"


def test_text_file_is_unsupported():
    assert _error(b"just some text, named photo.jpg\n" * 10).code is ErrorCode.UNSUPPORTED_MEDIA_TYPE


def test_gif_is_unsupported_even_when_animated():
    assert _error(samples.animated("GIF")).code is ErrorCode.UNSUPPORTED_MEDIA_TYPE


@pytest.mark.parametrize("fmt", ["WEBP", "PNG"])
def test_animated_webp_and_apng_refused(fmt):
    assert _error(samples.animated(fmt)).code is ErrorCode.ANIMATED_IMAGE


def test_size_cap():
    data = samples.photo()
    err = _error(data, max_bytes=len(data) - 1)
    assert err.code is ErrorCode.FILE_TOO_LARGE and err.http_status == 413
    assert normalize_upload(data, **{**LIMITS, "max_bytes": len(data)}).width == 160


def test_pixel_cap_refuses_bomb_before_decoding():
    err = _error(samples.bomb_png(3000, 3000))  # 9 MP > the 4 MP cap
    assert err.code is ErrorCode.IMAGE_TOO_LARGE and err.http_status == 413
    assert "4,000,000" in err.message


def test_pillow_bomb_error_maps_to_image_too_large():
    # 400 MP trips Pillow's own process-wide check inside Image.open, before ours
    err = _error(samples.bomb_png(20_000, 20_000), max_pixels=10**9)
    assert err.code is ErrorCode.IMAGE_TOO_LARGE


def test_too_small():
    err = _error(samples.photo(200, 40))
    assert err.code is ErrorCode.IMAGE_TOO_SMALL and "64" in err.message


def test_corrupt_jpeg():
    assert _error(samples.corrupt_jpeg()).code is ErrorCode.IMAGE_DECODE_FAILED


def test_empty_upload():
    assert _error(b"").code is ErrorCode.IMAGE_DECODE_FAILED


def test_exif_orientation_applied_and_metadata_dropped():
    image = normalize_upload(samples.rotated_jpeg(160, 120, orientation=6), **LIMITS)
    decoded = Image.open(io.BytesIO(image.data)).convert("RGB")
    # stored 160x120 with red left, blue right; orientation 6 displays it rotated 90° clockwise,
    # so upright it is 120x160 with red on top and blue at the bottom
    assert decoded.size == (120, 160)
    top, bottom = decoded.getpixel((60, 10)), decoded.getpixel((60, 150))
    assert top[0] > 150 and top[2] < 100
    assert bottom[2] > 150 and bottom[0] < 100
    assert not decoded.getexif() and b"CameraMaker" not in image.data
    assert b"Exif" not in image.data and "comment" not in Image.open(io.BytesIO(image.data)).info


def test_transparency_becomes_white():
    rgba = Image.new("RGBA", (80, 80), (0, 0, 0, 0))
    image = normalize_upload(samples.encode(rgba, "PNG"), **LIMITS)
    assert all(c >= 250 for c in Image.open(io.BytesIO(image.data)).getpixel((5, 5)))  # white, within JPEG error


def test_comment_icc_and_xmp_are_not_stored():
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    source = samples.encode(Image.new("RGB", (96, 96), (90, 120, 150)), "JPEG", comment=b"secret-comment",
                            icc_profile=icc, xmp=b"<x:xmpmeta>secret-xmp</x:xmpmeta>")
    assert b"secret-comment" in source and b"secret-xmp" in source  # the sample really carries them
    stored = normalize_upload(source, **LIMITS).data
    assert b"secret" not in stored and icc not in stored
    info = Image.open(io.BytesIO(stored)).info
    assert not {"comment", "icc_profile", "xmp", "exif"} & set(info)
