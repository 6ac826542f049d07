"""Upload checks as pure functions: bytes in, an upright RGB JPEG without metadata or a coded error
out. An upright JPEG is stored as it came less its metadata; everything else is decoded and stored
as a q95 4:4:4 JPEG."""

from __future__ import annotations

import io
import threading

import pytest
from PIL import Image, ImageChops, ImageStat, JpegImagePlugin

from api.decode_budget import DecodeBudget
from api.jpeg_segments import strip_metadata
from api.upload import check_size, normalize_upload, sniff_type
from shared.errors import ErrorCode, IdentityBodyError
from tests import image_samples as samples
from tests.chaos.chaos_stack import jpeg_claiming

LIMITS = {"max_bytes": 2 * 1024 * 1024, "max_pixels": 4_000_000, "min_side": 64}


def _error(data: bytes, **limits) -> IdentityBodyError:
    with pytest.raises(IdentityBodyError) as info:
        normalize_upload(data, **{**LIMITS, **limits})
    assert info.value.field == "face_image"
    return info.value


def _pixels(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _same_pixels(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and ImageChops.difference(a.convert("RGB"), b.convert("RGB")).getbbox() is None


@pytest.mark.parametrize("data,media", [
    (lambda: samples.photo(fmt="PNG"), "image/png"),
    (lambda: samples.photo(fmt="WEBP"), "image/webp"),
    (lambda: samples.heic(), "image/heic"),
    (lambda: samples.photo(fmt="AVIF"), "image/avif"),
], ids=["png", "webp", "heic", "avif"])
def test_other_formats_become_rgb_jpeg(data, media):
    image = normalize_upload(data(), **LIMITS)
    assert image.source_type == media and image.content_type == "image/jpeg"
    decoded = _pixels(image.data)
    assert decoded.format == "JPEG" and decoded.mode == "RGB" and decoded.size == (160, 120)
    # 4:4:4: the colour planes are not halved (faces keep their skin-tone detail)
    assert JpegImagePlugin.get_sampling(decoded) == 0
    left, right = decoded.getpixel((20, 60)), decoded.getpixel((140, 60))
    assert left[0] > 150 > left[2] and right[2] > 150 > right[0]  # the red and blue halves, in place


def test_upright_jpeg_is_stored_as_sent_without_a_second_encode():
    source = samples.encode(samples.halves(160, 120), "JPEG", quality=80)  # 4:2:0, as cameras write
    image = normalize_upload(source, **LIMITS)
    assert image.source_type == "image/jpeg" and (image.width, image.height) == (160, 120)
    assert image.data == source  # nothing to strip: not one byte changed, no generation lost
    assert JpegImagePlugin.get_sampling(_pixels(image.data)) == 2


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
    assert sniff_type(samples.heic()[:64]) == ("image/heic", "HEIF")
    assert sniff_type(samples.photo(fmt="AVIF")[:64]) == ("image/avif", "AVIF")
    assert sniff_type(b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom") is None  # a video is no photo


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
    with pytest.raises(IdentityBodyError, match="larger than 10 MiB"):  # the number the README names
        check_size((10 << 20) + 1, 10 << 20)
    assert normalize_upload(data, **{**LIMITS, "max_bytes": len(data)}).width == 160


def test_pixel_cap_refuses_bomb_before_decoding():
    err = _error(samples.bomb_png(3000, 3000))  # 9 MP > the 4 MP cap
    assert err.code is ErrorCode.IMAGE_TOO_LARGE and err.http_status == 413
    assert "4,000,000" in err.message


def test_pixel_cap_names_the_jpeg_cap_too():
    err = _error(samples.bomb_png(3000, 3000), max_jpeg_pixels=50_000_000)
    assert "4,000,000" in err.message and "JPEG may have up to 50,000,000" in err.message


def test_jpeg_pixel_cap_is_its_own():
    # 180 MP is past Pillow's own process-wide bomb error (179 MP) and within the 200 MP JPEG cap:
    # decoded at 1/8 scale, from a 16x16 JPEG whose frame header claims that size
    image = normalize_upload(jpeg_claiming(15000, 12000), **LIMITS)
    assert (image.width, image.height) == (1875, 1500)
    err = _error(jpeg_claiming(16000, 13000))  # 208 MP
    assert err.code is ErrorCode.IMAGE_TOO_LARGE and "200,000,000" in err.message


@pytest.fixture(scope="module")
def phone_48mp() -> bytes:
    return samples.phone_jpeg(8064, 6048)  # ~0.6 s to make; 0.7 MB on disk, 195 MB decoded whole


def test_48_megapixel_phone_jpeg_is_decoded_at_reduced_scale(phone_48mp):
    image = normalize_upload(phone_48mp, **{**LIMITS, "max_bytes": 10 << 20}, max_decode_bytes=32 << 20)
    # 1/4 scale is the first whose decode fits 32 MiB (1/2 would be 4032x3024x4 = 49 MB)
    assert (image.width, image.height) == (2016, 1512)
    decoded = _pixels(image.data)
    assert decoded.size == (2016, 1512) and decoded.getpixel((100, 700))[0] > 150


def test_large_png_is_decoded_and_reduced_not_refused():
    # issue 22: a 4032x3024 phone PNG (49 MB decoded, over the 32 MiB decode size) is within the
    # pixel cap, so it is taken; it is stored reduced to fit the same bound as a JPEG
    png = samples.encode(samples.halves(4032, 3024), "PNG", compress_level=1)
    image = normalize_upload(png, **{**LIMITS, "max_bytes": 10 << 20, "max_pixels": 40_000_000},
                             max_decode_bytes=32 << 20)
    assert (image.width, image.height) == (2016, 1512)  # halved: 2016x1512x4 = 12 MB
    decoded = _pixels(image.data)
    assert decoded.getpixel((100, 700))[0] > 150 and decoded.getpixel((1900, 700))[2] > 150


def test_decodes_hold_their_size_of_the_budget():
    budget = DecodeBudget(100)
    holding, second_in = threading.Event(), threading.Event()
    release = threading.Event()

    def first() -> None:
        with budget.reserve(60):
            holding.set()
            release.wait(30)

    def second() -> None:
        with budget.reserve(500):  # more than the whole budget: waits until it is the only decode
            second_in.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    threads[0].start()
    assert holding.wait(30)
    threads[1].start()
    assert not second_in.wait(0.3) and budget.free_bytes == 40
    release.set()
    assert second_in.wait(30)
    for thread in threads:
        thread.join(30)
    assert budget.free_bytes == 100


def test_too_small():
    err = _error(samples.photo(200, 40))
    assert err.code is ErrorCode.IMAGE_TOO_SMALL and "64" in err.message


def test_corrupt_jpeg():
    assert _error(samples.corrupt_jpeg()).code is ErrorCode.IMAGE_DECODE_FAILED


@pytest.mark.parametrize("damage", ["cut", "cut_then_end", "flipped_bytes", "bad_table", "garbage_between_segments"])
def test_the_reduced_decode_refuses_what_a_full_decode_refuses(damage):
    whole = samples.encode(samples.halves(320, 240), "JPEG", quality=90)
    scan = whole.index(b"\xff\xda")
    data = {
        "cut": lambda: whole[: (scan + len(whole)) // 2],
        "cut_then_end": lambda: whole[: (scan + len(whole)) // 2] + b"\xff\xd9",
        "flipped_bytes": lambda: whole[: scan + 40] + bytes(b ^ 0x5A for b in whole[scan + 40: scan + 400]) + whole[scan + 400:],
        "bad_table": lambda: whole.replace(b"\xff\xc4", b"\xff\xc4\xff\xff", 1),
        "garbage_between_segments": lambda: whole.replace(b"\xff\xdb", b"garbage\xff\xdb", 1),
    }[damage]()
    try:
        Image.open(io.BytesIO(data)).load()  # what a viewer decoding it whole makes of it
        full_decode_ok = True
    except (OSError, SyntaxError, ValueError):
        full_decode_ok = False
    try:
        normalize_upload(data, **LIMITS)
        checked_ok = True
    except IdentityBodyError as err:
        assert err.code is ErrorCode.IMAGE_DECODE_FAILED
        checked_ok = False
    assert checked_ok == full_decode_ok


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


def test_heic_orientation_is_applied():
    image = normalize_upload(samples.heic(160, 120, orientation=6), **LIMITS)
    decoded = _pixels(image.data)
    assert decoded.size == (120, 160)  # turned upright: red on top, blue at the bottom
    assert decoded.getpixel((60, 10))[0] > 150 and decoded.getpixel((60, 150))[2] > 150


def _jpeg_with_everything() -> tuple[bytes, bytes]:
    """A camera-like JPEG carrying EXIF (a GPS position, the maker), XMP, ICC, a comment, a JFIF
    thumbnail and a second image after its end (as phones append depth maps); and its ICC."""
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "secret-maker"
    exif.get_ifd(0x8825)[2] = (51.0, 30.0, 26.0)  # GPSLatitude
    exif.get_ifd(0x8825)[1] = "N"
    source = samples.encode(samples.halves(96, 96), "JPEG", comment=b"secret-comment", icc_profile=icc,
                            xmp=b"<x:xmpmeta>secret-xmp</x:xmpmeta>", exif=exif)
    thumbnail = b"JFIF\x00\x01\x02\x00\x00\x01\x00\x01\x02\x02" + b"secret-thumb"[:12]
    app0 = b"\xff\xe0" + (len(thumbnail) + 2).to_bytes(2, "big") + thumbnail
    source = source[:2] + app0 + source[2:] + samples.encode(Image.new("L", (8, 8)), "JPEG", comment=b"secret-trailer")
    return source, icc


def test_comment_icc_xmp_gps_thumbnails_and_trailing_images_are_not_stored():
    source, icc = _jpeg_with_everything()
    for secret in (b"secret-comment", b"secret-xmp", b"secret-maker", b"secret-thumb", b"secret-trailer", icc):
        assert secret in source  # the sample really carries them
    stored = normalize_upload(source, **LIMITS).data
    assert b"secret" not in stored and icc not in stored and b"Exif" not in stored
    info = _pixels(stored).info
    assert not {"comment", "icc_profile", "xmp", "exif"} & set(info)
    assert _same_pixels(_pixels(stored), _pixels(source))  # cut byte-wise: the very same pixels
    assert stored.count(b"\xff\xd8") == 1  # no second image


def test_exif_orientation_takes_the_decode_path_and_drops_metadata():
    source = samples.rotated_jpeg(160, 120, orientation=3)
    assert strip_metadata(source) is not None  # it could be cut byte-wise, but would then be upside down
    decoded = _pixels(normalize_upload(source, **LIMITS).data)
    assert decoded.size == (160, 120) and decoded.getpixel((10, 60))[2] > 150  # turned: blue now left


@pytest.mark.parametrize("data", [
    lambda jpeg: jpeg[:2] + b"\xff\xf7\x00\x04ab" + jpeg[2:],  # a JPEG-LS frame: no marker to guess at
    lambda jpeg: jpeg[:-2],  # no end marker
    lambda jpeg: jpeg[:2] + b"\xff\xe1\xff\xff" + jpeg[4:40],  # a segment longer than the file
], ids=["unknown_marker", "no_end", "overlong_segment"])
def test_strip_leaves_files_it_does_not_understand_to_the_decoder(data):
    assert strip_metadata(data(samples.photo())) is None
