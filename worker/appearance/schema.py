"""What appearance analysis asks Gemini for, and the ``analysis`` dict the job result carries.

The pydantic model is sent to Gemini as its structured-output schema, so the model answers in
exactly this shape; the same model validates the answer.

The ``analysis`` dict (job status and result JSON) has one of three shapes:

* success::

    {"status": "ok", "source": "gemini", "model": "gemini-2.5-flash",
     "skin_tone": "warm ivory", "ethnicity": "East Asian", "age_range": "25-34",
     "gender_presentation": "feminine", "hair": "long straight black hair", "confidence": 0.82}

  Every descriptive field may be ``null`` where the model was unsure.

* not run: ``{"status": "skipped", "reason": "not_requested" | "no_api_key", "message": "..."}``
* run but no usable answer: ``{"status": "failed", "reason": <FailureReason>, "message": "..."}``

``reason`` is a stable machine code; ``message`` is a sentence for a person.

Example::

    answer = AppearanceAnswer.model_validate_json('{"skin_tone": "warm ivory", "confidence": 0.8}')
    success_analysis(answer, model="gemini-2.5-flash")["skin_tone"]    # 'warm ivory'
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# Same cap as GenerationParams.skin_tone / .ethnicity, so a filled-in value is always a valid param.
_MAX_TEXT = 64


class AppearanceAnswer(BaseModel):
    """Gemini's answer about the visible appearance of the person in a face photo."""

    model_config = ConfigDict(str_strip_whitespace=True)

    skin_tone: str | None = Field(
        None, max_length=_MAX_TEXT,
        description="Visible skin tone in two or three plain words, e.g. 'warm ivory', 'deep brown'. Null if unsure.",
    )
    ethnicity: str | None = Field(
        None, max_length=_MAX_TEXT,
        description="Apparent broad ethnic appearance, e.g. 'East Asian', 'West African'. Null if unsure.",
    )
    age_range: str | None = Field(
        None, max_length=_MAX_TEXT, description="Apparent age range in years, e.g. '25-34'. Null if unsure."
    )
    gender_presentation: str | None = Field(
        None, max_length=_MAX_TEXT,
        description="Apparent gender presentation, e.g. 'feminine', 'masculine', 'androgynous'. Null if unsure.",
    )
    hair: str | None = Field(
        None, max_length=_MAX_TEXT, description="Hair colour, length and style, e.g. 'short curly black hair'."
    )
    confidence: float = Field(..., ge=0.0, le=1.0, description="Overall confidence in this description, 0 to 1.")


# The fields of AppearanceAnswer that describe the person (everything but confidence).
DESCRIPTIVE_FIELDS = ("skin_tone", "ethnicity", "age_range", "gender_presentation", "hair")

# body_params keys analysis may fill when the user left them empty.
FILLABLE_BODY_PARAMS = ("skin_tone", "ethnicity")


class AnalysisStatus(StrEnum):
    OK = "ok"
    SKIPPED = "skipped"
    FAILED = "failed"


class FailureReason(StrEnum):
    """Stable codes for ``analysis.reason``. Append only."""

    NOT_REQUESTED = "not_requested"
    NO_API_KEY = "no_api_key"
    TIMEOUT = "timeout"
    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    API_ERROR = "api_error"
    NETWORK_ERROR = "network_error"
    SAFETY_BLOCK = "safety_block"
    MALFORMED_ANSWER = "malformed_answer"
    INVALID_IMAGE = "invalid_image"
    INTERNAL_ERROR = "internal_error"


def success_analysis(answer: AppearanceAnswer, model: str) -> dict[str, Any]:
    """The ``analysis`` dict for a usable answer."""
    body: dict[str, Any] = {"status": AnalysisStatus.OK.value, "source": "gemini", "model": model}
    body.update(answer.model_dump())
    return body


def skipped_analysis(reason: FailureReason, message: str) -> dict[str, Any]:
    """The ``analysis`` dict when analysis was not attempted."""
    return {"status": AnalysisStatus.SKIPPED.value, "reason": reason.value, "message": message}


def failed_analysis(reason: FailureReason, message: str) -> dict[str, Any]:
    """The ``analysis`` dict when analysis was attempted and gave nothing usable."""
    return {"status": AnalysisStatus.FAILED.value, "reason": reason.value, "message": message}


def not_requested_analysis() -> dict[str, Any]:
    """The ``analysis`` dict for a job with ``use_gemini_analysis=false`` (the default)."""
    return skipped_analysis(
        FailureReason.NOT_REQUESTED,
        "Appearance analysis is off for this job; set use_gemini_analysis=true to send the face to Gemini.",
    )


def merge_analysis(body_params: dict[str, Any], analysis: dict[str, Any]) -> dict[str, Any]:
    """Fill the body params the user left empty (skin_tone, ethnicity) from a successful analysis.

    Pure: returns a new dict. Explicit user values always win; a skipped or failed analysis, or a
    field the model left null, changes nothing.

    Example::

        merge_analysis({"skin_tone": None, "ethnicity": "Nordic"},
                       {"status": "ok", "skin_tone": "warm ivory", "ethnicity": "East Asian"})
        # {"skin_tone": "warm ivory", "ethnicity": "Nordic"}
    """
    merged = dict(body_params)
    if analysis.get("status") != AnalysisStatus.OK.value:
        return merged
    for key in FILLABLE_BODY_PARAMS:
        if not given(merged.get(key)) and given(analysis.get(key)):
            merged[key] = analysis[key]
    return merged


def user_wins(user: Any, analysed: Any) -> Any:
    """The one "the user's value wins" rule: what the user gave, unless it is empty (None or blank
    text); then what the analysis found (which may be empty too).

    Example::

        user_wins("  ", "warm ivory")      # 'warm ivory'
        user_wins("olive", "warm ivory")   # 'olive'
    """
    return user if given(user) else analysed


def given(value: Any) -> bool:
    """A value the user actually gave: not None and not blank text."""
    return value is not None and not (isinstance(value, str) and not value.strip())
