"""Appearance analysis through the real google-genai SDK against a loopback Gemini REST server."""

from __future__ import annotations

import base64
import io
import socket
import time
from typing import Iterator

import pytest
from PIL import Image

from shared.params import GenerationParams
from shared.settings import Settings
from tests.gemini_server import GOOD_ANSWER, GeminiServer, Reply, answer_body, error_body
from worker.appearance.analyzer import MAX_SIDE_PX, AppearanceAnalyzer, encode_face, start_analysis
from worker.appearance.schema import DESCRIPTIVE_FIELDS, merge_analysis, not_requested_analysis

KEY = "test-key"
GOOD = GOOD_ANSWER


def gemini_settings(base_url: str | None, key: str | None = KEY, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "gemini_api_key": key,
        "gemini_base_url": base_url,
        "gemini_model": "gemini-test",
        "gemini_timeout_s": 3.0,
        "gemini_max_retries": 2,
        "gemini_max_concurrency": 2,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


def face_photo(size: tuple[int, int] = (1024, 768), orientation: int | None = None) -> Image.Image:
    """A decoded JPEG carrying EXIF (camera make, optional orientation), as an upload would be."""
    image = Image.new("RGB", size, (200, 160, 140))
    image.paste((40, 30, 20), (0, 0, size[0] // 2, size[1] // 4))  # asymmetric, so rotation shows
    exif = Image.Exif()
    exif[0x010F] = "TestCam"  # Make
    if orientation is not None:
        exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    buffer.seek(0)
    return Image.open(buffer)


@pytest.fixture
def gemini() -> Iterator[GeminiServer]:
    with GeminiServer.start(api_key=KEY) as server:
        yield server


@pytest.fixture
def analyzer(gemini: GeminiServer) -> Iterator[AppearanceAnalyzer]:
    with AppearanceAnalyzer.from_settings(gemini_settings(gemini.base_url), backoff_s=0.01) as a:
        yield a


def test_good_answer_fills_analysis_and_prompt_params(gemini: GeminiServer, analyzer: AppearanceAnalyzer) -> None:
    gemini.script(Reply(200, answer_body(GOOD)))
    analysis = analyzer.result(analyzer.submit(face_photo()))

    assert analysis["status"] == "ok"
    assert analysis["source"] == "gemini"
    assert analysis["model"] == "gemini-test"
    assert {k: analysis[k] for k in GOOD} == GOOD
    assert gemini.count == 1

    body_params = GenerationParams(body_type="athletic", gender="female").body_params()
    merged = merge_analysis(body_params, analysis)
    assert merged["skin_tone"] == "warm ivory"
    assert merged["ethnicity"] == "East Asian"
    assert {k: v for k, v in merged.items() if k not in ("skin_tone", "ethnicity")} == {
        k: v for k, v in body_params.items() if k not in ("skin_tone", "ethnicity")
    }
    # The merged values are still valid generation parameters.
    GenerationParams(**merged)


def test_user_values_win_over_analysis(gemini: GeminiServer, analyzer: AppearanceAnalyzer) -> None:
    gemini.script(Reply(200, answer_body(GOOD)))
    analysis = analyzer.analyze(face_photo())
    body_params = GenerationParams(ethnicity="Nordic", skin_tone="  ").body_params()

    merged = merge_analysis(body_params, analysis)

    assert merged["ethnicity"] == "Nordic"
    assert merged["skin_tone"] == "warm ivory"  # blank counts as left empty
    assert body_params["skin_tone"] == ""  # pure: the input is untouched


def test_merge_ignores_nulls_and_unsuccessful_analysis() -> None:
    params = {"skin_tone": None, "ethnicity": None, "gender": "male"}
    assert merge_analysis(params, {"status": "ok", "skin_tone": None, "ethnicity": "Arab"}) == {
        "skin_tone": None, "ethnicity": "Arab", "gender": "male",
    }
    assert merge_analysis(params, {"status": "failed", "reason": "timeout", "skin_tone": "x"}) == params
    assert merge_analysis(params, not_requested_analysis()) == params


def test_request_carries_downscaled_image_without_exif_and_the_schema(
    gemini: GeminiServer, analyzer: AppearanceAnalyzer
) -> None:
    gemini.script(Reply(200, answer_body(GOOD)))
    # 1024x768 stored, EXIF orientation 6 (rotate 90° clockwise): upright it is 768x1024.
    analyzer.analyze(face_photo((1024, 768), orientation=6))

    (request,) = gemini.requests
    assert request.model == "gemini-test"
    assert request.headers["x-goog-api-key"] == KEY
    parts = request.body["contents"][0]["parts"]
    inline = [p["inlineData"] for p in parts if "inlineData" in p]
    assert len(inline) == 1
    assert inline[0]["mimeType" if "mimeType" in inline[0] else "mime_type"] == "image/jpeg"
    sent = Image.open(io.BytesIO(base64.urlsafe_b64decode(inline[0]["data"])))
    assert sent.format == "JPEG"
    assert sent.size == (MAX_SIDE_PX * 3 // 4, MAX_SIDE_PX)
    assert len(sent.getexif()) == 0
    assert "exif" not in sent.info
    assert any(p.get("text") for p in parts), "the instruction travels with the image"

    config = request.body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    schema = config["responseSchema"]
    assert set(schema["properties"]) == set(DESCRIPTIVE_FIELDS) | {"confidence"}
    assert schema["properties"]["confidence"]["minimum"] == 0.0
    assert schema["properties"]["confidence"]["maximum"] == 1.0
    assert schema["required"] == ["confidence"]


def test_small_image_is_not_upscaled() -> None:
    sent = Image.open(io.BytesIO(encode_face(face_photo((300, 200)))))
    assert sent.size == (300, 200)


def test_timeout_fails_within_the_deadline(gemini: GeminiServer) -> None:
    gemini.script(Reply(200, answer_body(GOOD), delay_s=30))
    settings = gemini_settings(gemini.base_url, gemini_timeout_s=0.5)
    with AppearanceAnalyzer.from_settings(settings, backoff_s=0.01) as analyzer:
        started = time.monotonic()
        analysis = analyzer.analyze(face_photo())
        elapsed = time.monotonic() - started

    assert analysis == {"status": "failed", "reason": "timeout", "message": analysis["message"]}
    assert "0.5 s" in analysis["message"]
    assert elapsed < 10, "the analyzer waited for the server instead of its own deadline"
    assert gemini.count == 1, "no retry once the deadline is spent"


def test_rate_limit_then_success_retries_once(gemini: GeminiServer, analyzer: AppearanceAnalyzer) -> None:
    gemini.script(Reply(429, error_body(429, "RESOURCE_EXHAUSTED")), Reply(200, answer_body(GOOD)))
    analysis = analyzer.analyze(face_photo())
    assert analysis["status"] == "ok"
    assert analysis["skin_tone"] == "warm ivory"
    assert gemini.count == 2


def test_server_error_fails_after_bounded_retries(gemini: GeminiServer, analyzer: AppearanceAnalyzer) -> None:
    gemini.default = Reply(500, error_body(500, "INTERNAL"))
    analysis = analyzer.analyze(face_photo())
    assert analysis["status"] == "failed"
    assert analysis["reason"] == "server_error"
    assert "500" in analysis["message"]
    assert gemini.count == 1 + analyzer.max_retries


def test_client_error_is_not_retried(gemini: GeminiServer) -> None:
    with AppearanceAnalyzer.from_settings(gemini_settings(gemini.base_url, key="wrong-key")) as analyzer:
        analysis = analyzer.analyze(face_photo())
    assert analysis["status"] == "failed"
    assert analysis["reason"] == "api_error"
    assert "400" in analysis["message"]
    assert gemini.count == 0  # refused before it counts as an accepted request


@pytest.mark.parametrize(
    "body",
    [
        {"promptFeedback": {"blockReason": "SAFETY"}},
        {"candidates": [{"finishReason": "SAFETY", "index": 0,
                         "safetyRatings": [{"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH"}]}]},
        {"candidates": [{"finishReason": "IMAGE_SAFETY", "index": 0}]},
    ],
    ids=["prompt-blocked", "finish-safety", "finish-image-safety"],
)
def test_safety_block_fails_without_retry(gemini: GeminiServer, analyzer: AppearanceAnalyzer, body: dict) -> None:
    gemini.script(Reply(200, body))
    analysis = analyzer.analyze(face_photo())
    assert analysis["status"] == "failed"
    assert analysis["reason"] == "safety_block"
    assert "SAFETY" in analysis["message"]
    assert gemini.count == 1


@pytest.mark.parametrize(
    "text",
    [
        '{"skin_tone": "warm ivory", "confidence": 0.8',  # truncated JSON
        "The person has warm ivory skin.",  # prose instead of JSON
        '{"skin_tone": "warm ivory", "confidence": 3}',  # out of range
        '{"skin_tone": "warm ivory"}',  # confidence missing
        '["warm ivory"]',  # wrong type
    ],
    ids=["truncated", "prose", "confidence-range", "confidence-missing", "array"],
)
def test_malformed_answer_fails(gemini: GeminiServer, analyzer: AppearanceAnalyzer, text: str) -> None:
    gemini.script(Reply(200, answer_body(text)))
    analysis = analyzer.analyze(face_photo())
    assert analysis["status"] == "failed"
    assert analysis["reason"] == "malformed_answer"
    assert gemini.count == 1


def test_no_key_skips_without_a_request(gemini: GeminiServer) -> None:
    with AppearanceAnalyzer.from_settings(gemini_settings(gemini.base_url, key=None)) as analyzer:
        assert not analyzer.enabled
        future = analyzer.submit(face_photo())
        assert future.done()
        analysis = future.result()
    assert analysis["status"] == "skipped"
    assert analysis["reason"] == "no_api_key"
    assert gemini.count == 0


def test_unreachable_server_is_a_network_failure() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port any more.
    with AppearanceAnalyzer.from_settings(gemini_settings(f"http://127.0.0.1:{port}")) as analyzer:
        analysis = analyzer.analyze(face_photo())
    assert analysis["status"] == "failed"
    assert analysis["reason"] == "network_error"


def test_concurrency_cap_holds(gemini: GeminiServer) -> None:
    cap = 2
    # Each request is held until cap + 1 have arrived (or 0.5 s pass): if the cap leaked, all
    # cap + 1 would be in flight together.
    gemini.default = Reply(200, answer_body(GOOD), hold_until=cap + 1, hold_s=0.5)
    settings = gemini_settings(gemini.base_url, gemini_max_concurrency=cap, gemini_timeout_s=5.0)
    with AppearanceAnalyzer.from_settings(settings) as analyzer:
        futures = [analyzer.submit(face_photo((256, 256))) for _ in range(cap + 1)]
        results = [analyzer.result(f) for f in futures]

    assert [r["status"] for r in results] == ["ok"] * (cap + 1)
    assert gemini.count == cap + 1
    assert gemini.max_in_flight == cap


def test_submit_runs_beside_the_caller(gemini: GeminiServer, analyzer: AppearanceAnalyzer) -> None:
    """submit() returns before Gemini answers, so face analysis can run meanwhile."""
    gemini.script(Reply(200, answer_body(GOOD), hold_until=99, hold_s=0.3))
    future = analyzer.submit(face_photo())
    assert not future.done()
    assert analyzer.result(future)["status"] == "ok"


def test_a_failure_logs_one_line(gemini: GeminiServer, analyzer: AppearanceAnalyzer, caplog: pytest.LogCaptureFixture) -> None:
    gemini.default = Reply(503, error_body(503, "UNAVAILABLE"))
    with caplog.at_level("INFO", logger="worker.appearance.analyzer"):
        analyzer.analyze(face_photo())
    lines = [r for r in caplog.records if r.name == "worker.appearance.analyzer" and r.levelname != "DEBUG"]
    assert len(lines) == 1
    assert lines[0].levelname == "WARNING"
    assert "reason=server_error" in lines[0].getMessage()


def test_unreadable_image_fails_without_a_request(gemini: GeminiServer, analyzer: AppearanceAnalyzer) -> None:
    buffer = io.BytesIO()
    Image.effect_noise((256, 256), 64).convert("RGB").save(buffer, format="JPEG")
    data = buffer.getvalue()
    truncated = Image.open(io.BytesIO(data[: len(data) // 2]))  # header decodes, pixels do not

    analysis = analyzer.analyze(truncated)

    assert analysis["status"] == "failed"
    assert analysis["reason"] == "invalid_image"
    assert gemini.count == 0


def test_submit_after_close_degrades(gemini: GeminiServer) -> None:
    analyzer = AppearanceAnalyzer.from_settings(gemini_settings(gemini.base_url))
    analyzer.close()
    analysis = analyzer.analyze(face_photo())
    assert analysis["status"] == "failed"
    assert analysis["reason"] == "internal_error"
    assert gemini.count == 0


def test_start_analysis_honours_the_per_request_opt_in(gemini: GeminiServer, analyzer: AppearanceAnalyzer) -> None:
    gemini.script(Reply(200, answer_body(GOOD)))
    photo = face_photo()

    not_requested = start_analysis(analyzer, photo, requested=False).result()
    not_configured = start_analysis(None, photo, requested=True).result()
    assert (not_requested["status"], not_requested["reason"]) == ("skipped", "not_requested")
    assert (not_configured["status"], not_configured["reason"]) == ("skipped", "no_api_key")
    assert gemini.count == 0

    assert start_analysis(analyzer, photo, requested=True).result()["skin_tone"] == "warm ivory"
    assert gemini.count == 1
