"""Opt-in appearance analysis: ask a Gemini vision model (through the maintained ``google-genai``
SDK) for skin tone, ethnicity, age range, gender presentation and hair, so prompts match the person.

It runs beside face analysis on a small thread pool and never fails a job: every failure
(network, timeout, quota, server error, safety block, malformed answer) becomes an ``analysis``
dict with ``status: "failed"`` and a reason (shapes in ``worker.appearance.schema``), plus one log
line. The whole call, retries included, fits inside ``gemini_timeout_s`` counted from ``submit``.

Example::

    analyzer = AppearanceAnalyzer.from_settings(settings)
    future = analyzer.submit(face_image)           # starts at once, in the background
    faces = face_analyzer.analyze(face_image)      # meanwhile, on this thread
    analysis = analyzer.result(future)             # {"status": "ok", "skin_tone": ..., ...}
    body_params = merge_analysis(body_params, analysis)
"""

from __future__ import annotations

import importlib
import io
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types
from PIL import Image, ImageOps
from pydantic import ValidationError

from shared.settings import Settings
from worker.appearance.schema import (
    AppearanceAnswer,
    FailureReason,
    failed_analysis,
    not_requested_analysis,
    skipped_analysis,
    success_analysis,
)

log = logging.getLogger(__name__)

# The Gemini API version whose generateContent accepts responseSchema; the SDK's own default
# moved to "v1", so it is named here rather than left to the SDK.
GEMINI_API_VERSION = "v1beta"
# Enough detail for skin tone and hair; far fewer bytes of a face sent to a third party.
MAX_SIDE_PX = 512
JPEG_QUALITY = 90
# Below this much time left an attempt cannot finish a round trip, so it is not started.
_MIN_ATTEMPT_S = 0.05
# Extra wait in result() beyond the deadline: the run itself ends by the deadline, this only
# covers thread hand-off.
_RESULT_GRACE_S = 0.5

PROMPT = (
    "Describe the visible appearance of the person in this face photo so an image generator can "
    "draw the same person's full body. Answer only from what is visible; use short plain phrases; "
    "use null for anything you cannot judge. Give an overall confidence from 0 to 1."
)


def _http_exception_classes(name: str) -> tuple[type[BaseException], ...]:
    """``name`` from httpx and from httpx2: the SDK sends through whichever of the two is installed,
    and their exception classes are unrelated."""
    found: list[type[BaseException]] = []
    for module_name in ("httpx", "httpx2"):
        try:
            found.append(getattr(importlib.import_module(module_name), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


_TIMEOUT_ERRORS = _http_exception_classes("TimeoutException")
_TRANSPORT_ERRORS = _http_exception_classes("TransportError")

_BLOCKING_FINISH_REASONS = frozenset(
    {"SAFETY", "IMAGE_SAFETY", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "RECITATION"}
)


class _Failure(Exception):
    """One attempt's failure, classified. ``retryable``: a 429 or 5xx worth another try."""

    def __init__(self, reason: FailureReason, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retryable = retryable


def encode_face(image: Image.Image, max_side: int = MAX_SIDE_PX) -> bytes:
    """The face photo as a JPEG no larger than ``max_side`` on its longest side, upright, without
    EXIF or any other metadata.

    Example::

        jpeg = encode_face(Image.open("me.jpg"))    # e.g. 4032x3024 in, 512x384 JPEG out
    """
    upright = ImageOps.exif_transpose(image).convert("RGB")
    upright.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    # No exif=/icc_profile= arguments: Pillow writes no metadata it is not given.
    upright.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


class AppearanceAnalyzer:
    """Gemini appearance analysis with a deadline, bounded retries and a per-worker concurrency cap.

    ``client`` is None when no API key is set: every call then resolves to ``skipped`` without a
    request. Build it with ``from_settings``; call ``close()`` at worker shutdown.
    """

    def __init__(
        self,
        client: genai.Client | None,
        model: str,
        timeout_s: float,
        max_retries: int,
        max_concurrency: int,
        backoff_s: float = 0.5,
        max_side: int = MAX_SIDE_PX,
    ) -> None:
        self.client = client
        self.model = model
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.max_concurrency = max_concurrency
        self.backoff_s = backoff_s
        self.max_side = max_side
        self._closing = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="gemini")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> "AppearanceAnalyzer":
        """An analyzer configured from settings (``gemini_*``). Creates the SDK client only when a key
        is set; no network traffic happens here.

        Example::

            analyzer = AppearanceAnalyzer.from_settings(get_settings())
            analyzer.enabled        # False without IDBODY_GEMINI_API_KEY
        """
        key = settings.gemini_api_key.get_secret_value() if settings.gemini_api_key else ""
        client = None
        if key.strip():
            options = genai_types.HttpOptions(
                base_url=settings.gemini_base_url,
                api_version=GEMINI_API_VERSION,
                timeout=_millis(settings.gemini_timeout_s),
            )
            # No retry_options: the SDK then makes one attempt per call and retries stay here,
            # where they can be kept inside the deadline.
            client = genai.Client(api_key=key.strip(), http_options=options)
        kwargs: dict[str, Any] = {
            "model": settings.gemini_model,
            "timeout_s": settings.gemini_timeout_s,
            "max_retries": settings.gemini_max_retries,
            "max_concurrency": settings.gemini_max_concurrency,
        }
        kwargs.update(overrides)
        return cls(client, **kwargs)

    @property
    def enabled(self) -> bool:
        return self.client is not None

    def submit(self, image: Image.Image) -> Future[dict[str, Any]]:
        """Start analysing ``image`` in the background; the future resolves to the ``analysis`` dict
        within ``timeout_s`` and never raises.

        Example::

            future = analyzer.submit(face)
            analysis = analyzer.result(future)
        """
        if self.client is None:
            return _resolved(_no_key_analysis())
        deadline = time.monotonic() + self.timeout_s
        try:
            # A copy taken here, on the caller's thread: the caller may keep using (or lazily
            # load) the original while the pool thread encodes this one.
            snapshot = image.copy()
        except (OSError, ValueError) as exc:
            return _resolved(self._failed(_Failure(FailureReason.INVALID_IMAGE, f"The face image could not be read: {exc}.")))
        try:
            return self._pool.submit(self._run, snapshot, deadline)
        except RuntimeError:  # the pool is shut down: the worker is stopping
            return _resolved(self._failed(_Failure(FailureReason.INTERNAL_ERROR, "Appearance analysis is shut down on this worker.")))

    def result(self, future: Future[dict[str, Any]]) -> dict[str, Any]:
        """Wait for a submitted analysis, at most ``timeout_s`` (plus a small grace); never raises.

        Example::

            analysis = analyzer.result(analyzer.submit(face))
        """
        return wait_for_analysis(future, self.timeout_s)

    def analyze(self, image: Image.Image) -> dict[str, Any]:
        """Synchronous ``submit`` + ``result`` (same concurrency cap and deadline).

        Example::

            analyzer.analyze(face)["status"]      # "ok", "skipped" or "failed"
        """
        return self.result(self.submit(image))

    def close(self) -> None:
        """Stop waiting on backoffs, finish in-flight calls, release the pool and HTTP client."""
        self._closing.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self.client is not None:
            self.client.close()

    def __enter__(self) -> "AppearanceAnalyzer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- one analysis, on a pool thread ------------------------------------------------------

    def _run(self, image: Image.Image, deadline: float) -> dict[str, Any]:
        started = time.monotonic()
        try:
            jpeg = encode_face(image, self.max_side)
        except (OSError, ValueError) as exc:
            return self._failed(_Failure(FailureReason.INVALID_IMAGE, f"The face image could not be encoded: {exc}."))
        try:
            answer, attempts = self._call_with_retries(jpeg, deadline)
        except _Failure as failure:
            return self._failed(failure)
        except Exception as exc:  # noqa: BLE001 - the contract is "never raises"; logged with traceback
            log.exception("appearance analysis: unexpected error")
            return failed_analysis(FailureReason.INTERNAL_ERROR, f"Appearance analysis failed unexpectedly: {type(exc).__name__}.")
        log.info(
            "appearance analysis ok: model=%s attempts=%d elapsed_s=%.2f confidence=%.2f",
            self.model, attempts, time.monotonic() - started, answer.confidence,
        )
        return success_analysis(answer, self.model)

    def _call_with_retries(self, jpeg: bytes, deadline: float) -> tuple[AppearanceAnswer, int]:
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            if remaining < _MIN_ATTEMPT_S:
                raise _Failure(FailureReason.TIMEOUT, self._timeout_message())
            try:
                return self._call_once(jpeg, remaining), attempt
            except _Failure as failure:
                if not failure.retryable or attempt > self.max_retries:
                    raise
                delay = self.backoff_s * 2 ** (attempt - 1)
                if time.monotonic() + delay + _MIN_ATTEMPT_S >= deadline:
                    raise
                log.debug("appearance analysis: attempt %d failed (%s), retrying in %.2fs", attempt, failure.reason, delay)
                if self._closing.wait(delay):
                    raise

    def _call_once(self, jpeg: bytes, timeout_s: float) -> AppearanceAnswer:
        assert self.client is not None
        config = genai_types.GenerateContentConfig(
            response_mime_type="application/json",
            response_schema=AppearanceAnswer,
            temperature=0.0,
            http_options=genai_types.HttpOptions(timeout=_millis(timeout_s)),
        )
        contents = [genai_types.Part.from_bytes(data=jpeg, mime_type="image/jpeg"), PROMPT]
        try:
            response = self.client.models.generate_content(model=self.model, contents=contents, config=config)
        except genai_errors.APIError as exc:
            raise _classify_api_error(exc) from exc
        except _TIMEOUT_ERRORS as exc:
            raise _Failure(FailureReason.TIMEOUT, self._timeout_message()) from exc
        except _TRANSPORT_ERRORS as exc:
            raise _Failure(FailureReason.NETWORK_ERROR, f"Gemini could not be reached: {type(exc).__name__}.") from exc
        return _answer_from(response)

    def _failed(self, failure: _Failure) -> dict[str, Any]:
        log.warning("appearance analysis failed: reason=%s model=%s: %s", failure.reason, self.model, failure.message)
        return failed_analysis(failure.reason, failure.message)

    def _timeout_message(self) -> str:
        return f"Gemini did not answer within {self.timeout_s:g} s; the job ran without appearance analysis."


def start_analysis(
    analyzer: AppearanceAnalyzer | None, image: Image.Image, requested: bool
) -> Future[dict[str, Any]]:
    """The pipeline's one entry point: a future ``analysis`` dict for this job, whichever of the
    three cases holds (not requested, not configured, or running).

    Example::

        future = start_analysis(pipeline.appearance_analyzer, face, params.use_gemini_analysis)
        ...  # face analysis
        analysis = future.result()     # already bounded by the analyzer's deadline
    """
    if not requested:
        return _resolved(not_requested_analysis())
    if analyzer is None:
        return _resolved(_no_key_analysis())
    return analyzer.submit(image)


def wait_for_analysis(future: Future[dict[str, Any]], timeout_s: float) -> dict[str, Any]:
    """The one wait for an analysis: at most ``timeout_s`` plus a small grace for the thread
    hand-off, so the GPU never waits much past the Gemini timeout. Never raises: a hook that breaks
    the analyzer's promise (no answer in time, or an exception) still yields the schema's shape,
    a stable reason and a sentence.

    Example::

        analysis = wait_for_analysis(start_analysis(analyzer, face, True), settings.gemini_timeout_s)
    """
    wait_s = timeout_s + _RESULT_GRACE_S
    try:
        return dict(future.result(timeout=wait_s))
    except FutureTimeout:
        future.cancel()
        log.warning("appearance analysis gave no answer within %.1fs; going on without it", wait_s)
        return failed_analysis(FailureReason.TIMEOUT, f"Appearance analysis did not finish within "
                               f"{wait_s:g} s; the job ran without it.")
    except Exception as exc:  # noqa: BLE001 - analysis is optional; the job goes on without it
        log.warning("appearance analysis failed: %r", exc)
        return failed_analysis(FailureReason.INTERNAL_ERROR, f"Appearance analysis failed unexpectedly "
                               f"({type(exc).__name__}); the job ran without it.")


def _answer_from(response: genai_types.GenerateContentResponse) -> AppearanceAnswer:
    """The validated answer in a response, or the _Failure that explains why there is none."""
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason is not None:
        raise _Failure(FailureReason.SAFETY_BLOCK, f"Gemini refused the photo (block reason {_name(feedback.block_reason)}).")
    candidate = response.candidates[0] if response.candidates else None
    finish = _name(candidate.finish_reason) if candidate is not None and candidate.finish_reason else None
    if finish in _BLOCKING_FINISH_REASONS:
        raise _Failure(FailureReason.SAFETY_BLOCK, f"Gemini stopped its answer (finish reason {finish}).")
    text = response.text
    if not text:
        raise _Failure(FailureReason.MALFORMED_ANSWER, f"Gemini returned no text (finish reason {finish}).")
    try:
        return AppearanceAnswer.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "answer"
        raise _Failure(FailureReason.MALFORMED_ANSWER, f"Gemini's answer did not match the schema ({where}: {first['msg']}).") from exc


def _classify_api_error(exc: genai_errors.APIError) -> _Failure:
    code = exc.code or 0
    detail = f"HTTP {code} {exc.status or ''}".strip()
    if code == 429:
        return _Failure(FailureReason.RATE_LIMITED, f"Gemini quota or rate limit reached ({detail}).", retryable=True)
    if code >= 500:
        return _Failure(FailureReason.SERVER_ERROR, f"Gemini had a server error ({detail}).", retryable=True)
    return _Failure(FailureReason.API_ERROR, f"Gemini refused the request ({detail}): {exc.message or ''}".rstrip(": "))


def _no_key_analysis() -> dict[str, Any]:
    return skipped_analysis(
        FailureReason.NO_API_KEY,
        "Appearance analysis is not configured on this server (no Gemini API key); the job ran without it.",
    )


def _resolved(analysis: dict[str, Any]) -> Future[dict[str, Any]]:
    done: Future[dict[str, Any]] = Future()
    done.set_result(analysis)
    return done


def _name(value: object) -> str:
    return str(getattr(value, "value", value))


def _millis(seconds: float) -> int:
    return max(1, int(seconds * 1000))
