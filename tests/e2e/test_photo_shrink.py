"""The web page's photo shrinking (api/web/photo_shrink.js) in a real headless Chromium: a large
phone photo leaves the browser upright, at most 3072 px on its long side, as a JPEG without EXIF;
small photos and files the browser cannot decode leave as they came."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests import image_samples as samples
from tests.e2e.test_web_page import browser  # noqa: F401  (the module's Chromium fixture, shared)

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "api" / "web" / "photo_shrink.js"
# in the page: base64 in, PhotoShrink.forUpload, base64 of what would be uploaded out
SHRINK = """async ([b64, name, type]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const out = await PhotoShrink.forUpload(new File([bytes], name, { type }));
  const data = new Uint8Array(await out.arrayBuffer());
  let text = "";
  for (let i = 0; i < data.length; i += 0x8000) text += String.fromCharCode(...data.subarray(i, i + 0x8000));
  return { b64: btoa(text), name: out.name, type: out.type };
}"""


@pytest.fixture(scope="module")
def page(browser) -> Iterator[object]:  # noqa: F811
    page = browser.new_page()
    page.set_content("<!doctype html><title>shrink</title>")
    page.add_script_tag(path=str(SCRIPT))
    yield page
    page.close()


def _shrink(page, data: bytes, name: str, media_type: str) -> tuple[bytes, str, str]:
    out = page.evaluate(SHRINK, [base64.b64encode(data).decode(), name, media_type])
    return base64.b64decode(out["b64"]), out["name"], out["type"]


def test_large_photo_is_shrunk_upright_without_exif(page):
    image = samples.halves(4000, 3000)  # red left, blue right; orientation 6 shows it turned clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    exif.get_ifd(0x8825)[2] = (51.0, 30.0, 26.0)  # a GPS latitude
    source = samples.encode(image, "JPEG", quality=85, exif=exif)
    data, name, media_type = _shrink(page, source, "IMG_0001.JPG", "image/jpeg")
    shrunk = Image.open(io.BytesIO(data))
    assert (shrunk.format, name, media_type) == ("JPEG", "IMG_0001.jpg", "image/jpeg")
    assert shrunk.size == (2304, 3072)  # upright (portrait) and 3072 on the long side
    rgb = shrunk.convert("RGB")
    assert rgb.getpixel((1152, 200))[0] > 150 and rgb.getpixel((1152, 2900))[2] > 150  # red on top
    assert b"Exif" not in data and not shrunk.getexif()


def test_small_photo_and_undecodable_file_go_as_they_are(page):
    small = samples.photo(640, 480)
    assert _shrink(page, small, "small.jpg", "image/jpeg")[0] == small
    heic = samples.heic(320, 240)  # Chromium cannot decode HEIC: the server does
    assert _shrink(page, heic, "IMG_0002.HEIC", "image/heic") == (heic, "IMG_0002.HEIC", "image/heic")
