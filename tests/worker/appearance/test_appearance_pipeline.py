"""Appearance analysis wired into the identity pipeline (tiny profile, real diffusers and
insightface code) against the loopback Gemini server."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from PIL import Image

from idbody.stack.polling import answers, until
from shared.settings import Settings
from tests.gemini_server import GOOD_ANSWER, GeminiServer, Reply, answer_body, error_body
from worker.appearance.analyzer import AppearanceAnalyzer
from worker.identity_pipeline import IdentityPipeline

insightface = pytest.importorskip("insightface")
KEY = "pipeline-key"
GOOD = GOOD_ANSWER
SMALL_RUN = {"num_images": 1, "width": 64, "height": 64, "num_inference_steps": 1, "seed": 7}


def pipeline_settings(tmp_root: Path, **gemini: object) -> Settings:
    return Settings(
        _env_file=None,
        model_profile="tiny",
        tiny_model_dir=tmp_root / "tiny-models",
        device="cpu",
        onnx_providers=["CPUExecutionProvider"],
        gemini_timeout_s=3.0,
        gemini_max_retries=1,
        **gemini,
    )


def face() -> Image.Image:
    # The wheel's aligned 112 px crop, enlarged as an upload would be; the tiny profile's dlib detector finds it.
    photo = Path(insightface.__file__).parent / "data" / "images" / "Tom_Hanks_54745.png"
    return Image.open(photo).convert("RGB").resize((448, 448), Image.BICUBIC)


@pytest.fixture(scope="module")
def gemini() -> Iterator[GeminiServer]:
    with GeminiServer.start(api_key=KEY) as server:
        yield server


@pytest.fixture(scope="module")
def pipeline(gemini: GeminiServer, tiny_engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdentityPipeline]:
    settings = pipeline_settings(
        tmp_path_factory.getbasetemp(), gemini_api_key=KEY, gemini_base_url=gemini.base_url, gemini_model="gemini-test"
    )
    # load_models runs whole (profile, face analyzer, appearance wiring) on the session's tiny
    # engine, the one it would load on the CPU, instead of loading a second copy
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("worker.engine.loading.load_engine", lambda *args, **kwargs: tiny_engine)
        pipe = IdentityPipeline(settings).load_models()
    yield pipe
    pipe.appearance_analyzer.close()


@pytest.fixture(autouse=True)
def _fresh_server(gemini: GeminiServer) -> None:
    gemini.reset()


def test_load_models_wires_the_analyzer_when_a_key_is_set(pipeline: IdentityPipeline, gemini: GeminiServer) -> None:
    assert isinstance(pipeline.appearance_analyzer, AppearanceAnalyzer)
    assert pipeline.appearance_analyzer.enabled
    assert pipeline.appearance_analyzer.model == "gemini-test"


def test_analysis_fills_the_prompt_and_the_result(pipeline: IdentityPipeline, gemini: GeminiServer) -> None:
    gemini.script(Reply(200, answer_body(GOOD)))
    result = pipeline.generate(face(), body_type="athletic", gender="female", use_gemini_analysis=True, **SMALL_RUN)

    assert gemini.count == 1
    analysis = result["analysis"]
    assert analysis["skin_tone"] == "warm ivory"
    assert analysis["ethnicity"] == "East Asian"
    assert analysis["appearance"]["status"] == "ok"
    assert analysis["face"]["face_count"] == 1
    assert "East Asian woman" in result["prompt"]
    assert "warm ivory skin" in result["prompt"]
    assert "long straight black hair" in result["prompt"]
    assert len(result["images"]) == 1


def test_user_values_win_in_the_prompt(pipeline: IdentityPipeline, gemini: GeminiServer) -> None:
    gemini.script(Reply(200, answer_body(GOOD)))
    result = pipeline.generate(face(), ethnicity="Nordic", use_gemini_analysis=True, **SMALL_RUN)

    assert "Nordic" in result["prompt"]
    assert "East Asian" not in result["prompt"]
    assert "warm ivory skin" in result["prompt"]  # left empty by the user, so analysis fills it


def test_not_requested_sends_nothing(pipeline: IdentityPipeline, gemini: GeminiServer) -> None:
    result = pipeline.generate(face(), **SMALL_RUN)

    assert gemini.count == 0
    appearance = result["analysis"]["appearance"]
    assert (appearance["status"], appearance["reason"]) == ("skipped", "not_requested")
    assert "skin_tone" not in result["analysis"]


def test_gemini_failure_does_not_fail_the_job(pipeline: IdentityPipeline, gemini: GeminiServer) -> None:
    gemini.default = Reply(500, error_body(500, "INTERNAL"))
    result = pipeline.generate(face(), use_gemini_analysis=True, **SMALL_RUN)

    assert gemini.count == 2  # one retry (gemini_max_retries=1)
    appearance = result["analysis"]["appearance"]
    assert (appearance["status"], appearance["reason"]) == ("failed", "server_error")
    assert "skin_tone" not in result["analysis"]
    assert len(result["images"]) == 1


def test_no_key_leaves_the_analyzer_out(tmp_path_factory: pytest.TempPathFactory, pipeline: IdentityPipeline) -> None:
    bare = IdentityPipeline(pipeline_settings(tmp_path_factory.getbasetemp()))
    # Share the loaded engine rather than loading the tiny profile a second time.
    bare.engine, bare.face_analyzer = pipeline.engine, pipeline.face_analyzer
    assert bare.appearance_analyzer is None

    result = bare.generate(face(), use_gemini_analysis=True, **SMALL_RUN)

    appearance = result["analysis"]["appearance"]
    assert (appearance["status"], appearance["reason"]) == ("skipped", "no_api_key")


class _FaceAnalyzerThatWaitsForGemini:
    """Delegates to the real face analyzer, but first waits (with a deadline) for the Gemini
    request to arrive: only possible if the request was sent before face analysis started."""

    def __init__(self, real, gemini: GeminiServer) -> None:
        self.real, self.gemini, self.saw_request = real, gemini, False

    def analyze(self, image: Image.Image):
        answers(lambda: until(lambda: self.gemini.count, 2.0, "the Gemini request", interval_s=0.01), TimeoutError)
        self.saw_request = self.gemini.count == 1
        return self.real.analyze(image)

    def largest_face(self, image: Image.Image):  # the identity score of each output
        return self.real.largest_face(image)


def test_gemini_runs_beside_face_analysis(pipeline: IdentityPipeline, gemini: GeminiServer) -> None:
    gemini.script(Reply(200, answer_body(GOOD)))
    real = pipeline.face_analyzer
    waiting = _FaceAnalyzerThatWaitsForGemini(real, gemini)
    pipeline.face_analyzer = waiting
    try:
        result = pipeline.generate(face(), use_gemini_analysis=True, **SMALL_RUN)
    finally:
        pipeline.face_analyzer = real

    assert waiting.saw_request
    assert result["analysis"]["appearance"]["status"] == "ok"
