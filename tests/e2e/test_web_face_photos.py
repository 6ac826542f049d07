"""Several face photos on the web page, in a real headless Chromium against the real local stack
(tests/e2e/test_web_page.py has the fixtures): a phone picks two photos and gets one job made from
both; on a desktop the page keeps to the server's most photos, removes one, and marks the photo an
error names."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageOps

from tests.e2e.test_web_page import (  # noqa: F401 (fixtures)
    ARTIFACTS,
    DESKTOP,
    FACE,
    _fits_the_screen,
    browser,
    job_deadline_ms,
    phone,
    stack,
)

pytestmark = pytest.mark.integration


def photo_file(name: str, image: Image.Image) -> dict:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    return {"name": name, "mimeType": "image/jpeg", "buffer": buffer.getvalue()}


def face_files(count: int) -> list[dict]:
    """The example face and mirror images of it: photos of one person."""
    face = Image.open(FACE).convert("RGB")
    return [photo_file(f"face{i}.jpg", ImageOps.mirror(face) if i % 2 else face) for i in range(count)]


@pytest.fixture
def desktop(browser):  # noqa: F811
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    yield page
    context.close()


def thumbnails(page) -> int:
    return page.eval_on_selector_all("#previews li", "items => items.length")


def test_two_photos_on_a_phone_make_one_job(stack, phone, job_deadline_ms):  # noqa: F811
    page = phone
    page.goto(stack.base_url + "/")
    page.wait_for_selector("#submit:not([disabled])")
    assert page.inner_text("#max-photos") == "5"  # /api/v1/info's max_face_images
    page.set_input_files("#photo", files=face_files(2))
    assert thumbnails(page) == 2 and "2 photos" in page.inner_text("#drop-text")
    assert _fits_the_screen(page)
    page.fill("#param-num_images", "1")
    page.click("#submit")
    page.wait_for_function("document.querySelector('#status').dataset.status === 'succeeded'",
                           timeout=job_deadline_ms)
    page.wait_for_selector("#gallery img")
    assert page.inner_text("#result-photos").startswith("One identity from 2 photos")
    assert _fits_the_screen(page)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "phone-two-photos.png"), full_page=True)


def test_the_page_keeps_to_five_photos_and_removes_one(stack, desktop):  # noqa: F811
    page = desktop
    page.goto(stack.base_url + "/")
    page.wait_for_selector("#submit:not([disabled])")
    page.set_input_files("#photo", files=face_files(6))
    assert thumbnails(page) == 5
    assert page.inner_text("#error-code") == "too_many_face_images"
    page.click("#previews li:nth-child(2) .remove")
    assert thumbnails(page) == 4 and page.is_hidden("#error")
    page.set_input_files("#camera", files=face_files(1))  # a phone's camera adds one more
    assert thumbnails(page) == 5


def test_an_error_about_photo_two_marks_photo_two(stack, desktop):  # noqa: F811
    page = desktop
    page.goto(stack.base_url + "/")
    page.wait_for_selector("#submit:not([disabled])")
    notes = {"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"these are notes, not a photo"}
    page.set_input_files("#photo", files=[*face_files(1), notes])
    page.click("#submit")
    page.wait_for_selector("#error:not([hidden])")
    assert page.inner_text("#error-code") == "unsupported_media_type"
    assert page.inner_text("#error-message").startswith("Photo 2 of 2:")
    marked = page.eval_on_selector_all("#previews li", "items => items.map(i => i.classList.contains('invalid'))")
    assert marked == [False, True] and "invalid" in page.get_attribute("section.photo", "class")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "desktop-photo-two-refused.png"), full_page=True)
