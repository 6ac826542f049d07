"""Body parameters (and optional appearance analysis) → the positive and negative prompt.

Pure: no I/O, no models. The user's explicit values always win; the analysis only fills fields the
user left empty. The subject and the full-body framing come first because SDXL's CLIP encoders
read only the first 77 tokens.

Example::

    pair = build_prompt({"body_type": "athletic", "height_cm": 170, "weight_kg": 65,
                         "gender": "female", "ethnicity": "East Asian", "skin_tone": "fair",
                         "pose": "standing", "clothing": "casual minimal"})
    pair.positive   # "full body shot of an East Asian woman, head to toe, ..."
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.styles import DEFAULT_STYLE, STYLES
from worker.appearance.schema import given, user_wins

# WHO adult BMI cut-offs; a value on a boundary belongs to the upper band.
BMI_BANDS: tuple[tuple[float, str], ...] = (
    (18.5, "underweight"),
    (25.0, "normal"),
    (30.0, "overweight"),
    (float("inf"), "obese"),
)

BUILD_WORDS: dict[str, str] = {
    "slim": "slim build, slender frame",
    "athletic": "athletic build, toned fit physique",
    "muscular": "muscular build, broad shoulders, defined muscles",
    "average": "average build",
    "curvy": "curvy figure, full hips",
}

# The band adds weight cues only where it moves the picture away from the body type alone.
BMI_WORDS: dict[str, str] = {
    "underweight": "very lean, thin",
    "normal": "healthy weight",
    "overweight": "heavyset, fuller body",
    "obese": "plus-size, large body",
}

POSE_WORDS: dict[str, str] = {
    "standing": "standing upright, facing the camera, arms relaxed",
    "walking": "walking towards the camera, mid-stride",
    "sitting": "sitting on a chair, facing the camera, legs and feet visible",
}

# What each pose must not turn into.
POSE_NEGATIVE: dict[str, str] = {
    "standing": "sitting, lying down",
    "walking": "sitting, lying down",
    "sitting": "standing, lying down",
}

GENDER_NOUNS: dict[str, str] = {
    "male": "man",
    "man": "man",
    "masculine": "man",
    "female": "woman",
    "woman": "woman",
    "feminine": "woman",
}

FRAMING = "head to toe, entire body in frame, shoes visible"

NEGATIVE_BASE = (
    "cropped, cut off, out of frame, portrait, close-up, headshot, upper body only, half body, "
    "missing legs, missing feet, extra limbs, extra arms, extra legs, extra fingers, "
    "deformed hands, bad anatomy, bad proportions, disfigured, blurry, lowres, watermark, text"
)

DEFAULT_BODY: dict[str, Any] = {
    "body_type": "average",
    "height_cm": 170.0,
    "weight_kg": 65.0,
    "pose": "standing",
    "clothing": "casual minimal",
    "style": DEFAULT_STYLE,
}


@dataclass(frozen=True)
class PromptPair:
    positive: str
    negative: str


def bmi_band(height_cm: float, weight_kg: float) -> str:
    """The WHO BMI band ("underweight", "normal", "overweight", "obese") for a height and weight.

    Example::

        bmi_band(170, 65)   # "normal" (BMI 22.5)
    """
    if height_cm <= 0 or weight_kg <= 0:
        raise ValueError("height_cm and weight_kg must be positive")
    bmi = weight_kg / (height_cm / 100.0) ** 2
    for upper, band in BMI_BANDS:
        if bmi < upper:
            return band
    return BMI_BANDS[-1][1]


def height_words(height_cm: float) -> str:
    """A stature phrase; heights in the middle add nothing."""
    if height_cm < 155:
        return "short stature"
    if height_cm >= 185:
        return "tall stature"
    return ""


def build_prompt(body: dict[str, Any], analysis: dict[str, Any] | None = None, pose_photo: bool = False) -> PromptPair:
    """Compose the prompts for one job from the seed's body parameters, ``style`` (a preset of
    ``shared.styles``: its fragment right after the framing, where the 77-token window surely
    reads it, and its negative after the pose's) and ``scene`` (free text after the clothing).

    ``analysis`` (keys skin_tone, ethnicity, age_range, gender_presentation, hair) only fills what
    the user left empty or None. With ``pose_photo`` the skeleton from a pose photo sets the pose,
    so no template pose is named in either prompt.

    Example::

        build_prompt({"body_type": "slim", "height_cm": 180, "weight_kg": 60, "gender": "male",
                      "pose": "walking", "clothing": "jeans"}, {"hair": "short black hair"})
    """
    analysis = analysis or {}
    merged = {**DEFAULT_BODY, **{k: v for k, v in body.items() if given(v)}}
    body_type = str(merged["body_type"])
    pose = "" if pose_photo else str(merged["pose"])
    height, weight = float(merged["height_cm"]), float(merged["weight_kg"])

    subject = _subject(merged, analysis)
    style = STYLES[str(merged["style"])]
    parts = [
        f"full body shot of {_article(subject)} {subject}",
        FRAMING,
        style.positive,
        POSE_WORDS.get(pose, _clean(pose)),
        BUILD_WORDS.get(body_type, _clean(body_type) + " build"),
        BMI_WORDS[bmi_band(height, weight)],
        height_words(height),
        _skin(_pick(merged.get("skin_tone"), analysis.get("skin_tone"))),
        _clean(analysis.get("hair")),
        f"wearing {_clean(merged['clothing']) or 'casual clothes'}",
        _clean(merged.get("scene")),
    ]
    # Pose and style conflicts first: the negative prompt is truncated at 77 tokens as well.
    negative = ", ".join(p for p in (POSE_NEGATIVE.get(pose, ""), style.negative, NEGATIVE_BASE) if p)
    return PromptPair(positive=", ".join(p for p in parts if p), negative=negative)


def _subject(body: dict[str, Any], analysis: dict[str, Any]) -> str:
    gender = _pick(body.get("gender"), analysis.get("gender_presentation")).lower()
    noun = GENDER_NOUNS.get(gender, "person")
    age = _clean(analysis.get("age_range"))
    age_words = f"{age} year old" if age and age[0].isdigit() else age
    ethnicity = _pick(body.get("ethnicity"), analysis.get("ethnicity"))
    return " ".join(w for w in (age_words, ethnicity, noun) if w)


def _pick(user: Any, analysed: Any) -> str:
    return _clean(user_wins(user, analysed))


def _clean(value: Any) -> str:
    # Free text goes into a comma-separated prompt: collapse whitespace, keep it one phrase.
    if value is None:
        return ""
    return " ".join(str(value).replace("\n", " ").split()).strip(" ,")


def _skin(tone: str) -> str:
    if not tone:
        return ""
    return tone if tone.lower().endswith("skin") else f"{tone} skin"


def _article(phrase: str) -> str:
    return "an" if phrase[:1].lower() in "aeiou" else "a"


FACE_DETAIL_QUALITY = "detailed face, natural skin texture, sharp focus"
FACE_DETAIL_NEGATIVE = "blurry, lowres, deformed, disfigured, asymmetric eyes, bad anatomy, watermark, text"


def face_detail_prompt(body: dict[str, Any], analysis: dict[str, Any] | None = None) -> PromptPair:
    """The prompt pair for the face-detail pass: the same person, described as the close-up the
    crop is, in the job's style (a photoreal face pasted into a watercolor would stand out). The body
    prompt's framing and its anti-close-up negative would fight that crop.

    Example::

        face_detail_prompt({"gender": "female", "skin_tone": "fair"}).positive
        # "close-up photo of the face of a woman, fair skin, detailed face, ..."
    """
    analysis = analysis or {}
    merged = {**DEFAULT_BODY, **{k: v for k, v in body.items() if given(v)}}
    subject = _subject(merged, analysis)
    style = STYLES[str(merged["style"])]
    parts = [
        f"close-up photo of the face of {_article(subject)} {subject}",
        _skin(_pick(merged.get("skin_tone"), analysis.get("skin_tone"))),
        _clean(analysis.get("hair")),
        FACE_DETAIL_QUALITY,
        style.positive,
    ]
    return PromptPair(positive=", ".join(p for p in parts if p),
                      negative=f"{style.negative}, {FACE_DETAIL_NEGATIVE}")
