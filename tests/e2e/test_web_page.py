"""The web page in a real headless Chromium (Debian's ``chromium``, driven by Playwright) against
the real local stack: gateway and a Celery worker on the tiny profile, Valkey, SeaweedFS.

Screenshots land in ``test-artifacts/web/`` (ignored by git) for a person to look at.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from idbody.stack.service import ServiceStack, running_stack, stack_settings
from shared.jobs.store import JobStore
from tests.image_samples import uniform_jpeg

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
# Playwright's own browser download cannot run here: the system chromium, quiet and offline
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
FACE = REPO / "docs" / "examples" / "face.jpg"
ARTIFACTS = REPO / "test-artifacts" / "web"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1100, "height": 900}
STEPS, IMAGES = 4, 2


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (.ci/run does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def stack(valkey, s3_server, tmp_path_factory) -> Iterator[ServiceStack]:
    settings = stack_settings(
        valkey, s3_server, 9, "web", tiny_model_dir=tmp_path_factory.getbasetemp() / "tiny-models",
        model_profile="tiny", device="cpu", auth_disabled=True, default_width=128, default_height=128,
    )
    with running_stack(settings, tmp_path_factory.mktemp("web-logs"), io_worker=None) as service:
        yield service


@pytest.fixture(scope="module")
def job_deadline_ms(stack: ServiceStack) -> float:
    """A job's deadline from the worker's own measured warm-up (a one-step generation at load),
    generous for a machine other work keeps busy."""
    warmup_s = max(float(w.get("warmup_s", 1.0)) for w in JobStore.from_settings(stack.settings).live_workers())
    return 1000 * max(120.0, 60 * warmup_s)


@pytest.fixture
def phone(browser, request) -> Iterator[object]:
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    page = context.new_page()
    yield page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()


def _fits_the_screen(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_a_photo_becomes_a_gallery_with_live_progress(stack, phone, job_deadline_ms):
    page = phone
    page.goto(stack.base_url + "/")
    page.wait_for_selector("#notice:not([hidden])")
    assert "tiny profile" in page.inner_text("#notice") and "noise" in page.inner_text("#notice")
    assert page.input_value("#param-size") == "128x128"  # the server's default size, preselected
    assert page.get_attribute("#param-height_cm", "max") == "300"  # ranges from shared/params.py
    page.set_input_files("#photo", str(FACE))
    page.fill("#param-num_images", str(IMAGES))
    page.click("details > summary")
    page.fill("#param-num_inference_steps", str(STEPS))
    page.select_option("#param-style", "cinematic")  # the presets of shared/styles.py, from /api/v1/info
    page.select_option("#param-output_format", "webp")
    # the tiny profile ships two bases: the page offers them, the default first and preselected
    assert page.eval_on_selector_all("#param-base_model option", "os => os.map(o => o.value)") == ["tiny", "tiny-alt"]
    assert page.input_value("#param-base_model") == "tiny"
    page.select_option("#param-base_model", "tiny-alt")
    page.fill("#param-min_identity_score", "1")  # nothing reaches 1: every image is marked below it
    page.click("#submit")
    page.wait_for_function("document.querySelector('#status').dataset.status === 'succeeded'",
                           timeout=job_deadline_ms)
    assert page.get_attribute("#status", "data-transport") == "events"
    # the bar ends full; its total is the asked steps plus the face-detail pass's (issue 15)
    value, total = page.evaluate("[document.querySelector('#bar').value, document.querySelector('#bar').max]")
    assert value == total >= STEPS
    seen = page.eval_on_selector_all("#events li", "items => items.map(i => i.textContent)")
    # the stream sends the record's states as it samples them (every 0.25 s): a 4-step tiny job can
    # run its steps between two samples, so live steps are checked on the long job of the cancel test
    assert seen[0].startswith(("Queued", "Running")) and seen[-1] == "Done", seen
    page.wait_for_function(
        f"[...document.querySelectorAll('#gallery img')].filter(i => i.complete && i.naturalWidth > 0).length === {IMAGES}",
        timeout=30_000)
    assert page.eval_on_selector_all("#gallery img", "imgs => imgs.map(i => i.naturalWidth)") == [128, 128]
    assert page.get_attribute("#result-note", "data-base-model") == "tiny-alt"
    assert page.eval_on_selector_all("#gallery a.button", "links => links.length") == IMAGES
    captions = page.eval_on_selector_all("#gallery figcaption", "cs => cs.map(c => [c.textContent, c.dataset.belowThreshold])")
    assert len(captions) == IMAGES and all(below == "true" and "below threshold" in text for text, below in captions)
    assert all("(dlib-resnet)" in text or "no face found" in text for text, _ in captions), captions
    assert all(name.endswith(".webp") for name in page.eval_on_selector_all(
        "#gallery a.button", "links => links.map(a => a.getAttribute('download'))"))
    assert _fits_the_screen(page)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "phone-gallery.png"), full_page=True)
    page.set_viewport_size(DESKTOP)  # the same page on a laptop, for the README
    page.screenshot(path=str(ARTIFACTS / "desktop-gallery.png"), full_page=True)


def test_a_bad_upload_shows_the_error_code_and_message(stack, phone):
    page = phone
    page.goto(stack.base_url + "/")
    page.wait_for_selector("#submit:not([disabled])")
    page.set_input_files("#photo", files=[{"name": "notes.jpg", "mimeType": "image/jpeg",
                                          "buffer": b"these are notes, not a photo"}])
    page.click("#submit")
    page.wait_for_selector("#error:not([hidden])")
    assert page.inner_text("#error-code") == "unsupported_media_type"
    assert "JPEG, PNG, WebP, HEIC or AVIF" in page.inner_text("#error-message")
    assert page.is_hidden("#job")
    assert "invalid" in page.get_attribute("section.photo", "class")  # the field at fault is marked
    assert _fits_the_screen(page)


def test_a_failed_job_shows_its_code_when_only_polling_works(stack, phone, job_deadline_ms):
    page = phone
    page.route("**/events", lambda route: route.abort())  # a proxy that breaks streaming
    page.goto(stack.base_url + "/")
    page.wait_for_selector("#submit:not([disabled])")
    page.set_input_files("#photo", files=[{"name": "wall.jpg", "mimeType": "image/jpeg", "buffer": uniform_jpeg()}])
    page.click("#submit")
    page.wait_for_function("document.querySelector('#status').dataset.status === 'failed'", timeout=job_deadline_ms)
    assert page.get_attribute("#status", "data-transport") == "polling"
    assert page.inner_text("#error-code") == "no_face_detected"
    assert "face" in page.inner_text("#error-message")
    assert page.is_hidden("#results")


def test_cancel_stops_a_running_job(stack, phone, job_deadline_ms):
    page = phone
    page.goto(stack.base_url + "/")
    page.wait_for_selector("#submit:not([disabled])")
    page.set_input_files("#photo", str(FACE))
    page.select_option("#param-mode", "quality")
    page.select_option("#param-size", "512x512")
    page.click("details > summary")
    page.fill("#param-num_inference_steps", "100")  # long enough to be caught running
    page.click("#submit")
    page.wait_for_function("document.querySelector('#status').dataset.status === 'running'", timeout=job_deadline_ms)
    # live steps: a step line in the event list and the bar moving, while the job still runs
    page.wait_for_function(
        "[...document.querySelectorAll('#events li')].some(li => / \\(step \\d+ of \\d+\\)/.test(li.textContent))"
        " && document.querySelector('#bar').value > 0", timeout=job_deadline_ms)
    assert page.get_attribute("#status", "data-status") == "running"
    page.click("#cancel")
    page.wait_for_function("document.querySelector('#status').dataset.status === 'canceled'", timeout=job_deadline_ms)
    assert page.inner_text("#error-code") == "job_canceled"
    assert page.is_hidden("#cancel") and page.is_hidden("#results")


def test_the_api_key_is_asked_for_and_kept_when_auth_is_on(browser, gateway_settings, redis_client):
    from tests.api.test_web_api import served

    with served(gateway_settings.model_copy(update={"auth_disabled": False})) as gw:
        context = browser.new_context(viewport=PHONE)
        page = context.new_page()
        page.goto(gw.base_url + "/")
        page.wait_for_selector("#auth:not([hidden])")
        page.fill("#api-key", "idb_example_key")
        page.dispatch_event("#api-key", "change")
        page.reload()
        page.wait_for_selector("#auth:not([hidden])")
        assert page.input_value("#api-key") == "idb_example_key"
        page.set_input_files("#photo", str(FACE))
        page.click("#submit")
        page.wait_for_selector("#error:not([hidden])")
        assert page.inner_text("#error-code") == "unauthorized"  # the key was sent, and is unknown
        context.close()


@pytest.fixture
def gateway_settings(settings):
    return settings


def test_the_readme_shows_a_screenshot_of_the_page():
    # docs/web-page.png: test-artifacts/web/desktop-gallery.png, as the gallery test leaves it
    assert (REPO / "docs" / "web-page.png").stat().st_size > 10_000
    assert "docs/web-page.png" in (REPO / "README.md").read_text()
