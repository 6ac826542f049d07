"""Generation parameters: ranges written once, shared by the HTTP form, the Celery task payload,
the CLI and the Python API (``pipeline.generate(...)``).

Example::

    params = GenerationParams(body_type="athletic", height_cm=170, weight_kg=65, gender="female")
    params.steps()          # 5 in fast mode (LCM), 30 in quality mode
"""

from __future__ import annotations

import unicodedata
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from shared.errors import ErrorCode, IdentityBodyError
from shared.output_formats import DEFAULT_FORMAT, OutputFormat
from shared.styles import DEFAULT_STYLE, StyleName

BodyType = Literal["slim", "athletic", "muscular", "average", "curvy"]
Gender = Literal["male", "female", "other"]
Pose = Literal["standing", "walking", "sitting"]
Mode = Literal["fast", "quality"]

# Per-mode defaults. fast: LCM-LoRA + LCMScheduler, 5 steps at guidance 1.5 as the official
# InstantID app runs LCM, so the anti-close-up negative prompt applies (why: worker.engine.lcm_mode).
# quality: Euler, 30 steps, classifier-free guidance 5.
MODE_DEFAULTS: dict[str, dict[str, float | int]] = {
    "fast": {"num_inference_steps": 5, "guidance_scale": 1.5},
    "quality": {"num_inference_steps": 30, "guidance_scale": 5.0},
}

LCM_MAX_STEPS = 50
# LCM-LoRA was distilled for guidance around 1-2; above that its few steps over-saturate.
LCM_MAX_GUIDANCE = 2.0
# Re-ranking generates up to this many images in the one batch (memory grows with the batch).
MAX_CANDIDATES = 8

# The seed's body_params keys (what ``pipeline(face_image=..., body_params={...})`` accepts).
BODY_PARAM_KEYS = ("body_type", "height_cm", "weight_kg", "gender", "ethnicity", "skin_tone", "pose", "clothing")
# what prompt building reads: the body parameters plus the look and the surroundings
PROMPT_PARAM_KEYS = (*BODY_PARAM_KEYS, "style", "scene")


# What a person reads for each field (the schema's `title`: the web page's labels, /docs); a field
# left out gets pydantic's title from its name
TITLES = {
    "body_type": "Body type", "height_cm": "Height (cm)", "weight_kg": "Weight (kg)", "gender": "Gender",
    "ethnicity": "Ethnicity", "skin_tone": "Skin tone", "pose": "Pose", "clothing": "Clothing",
    "num_images": "Number of images", "mode": "Mode", "num_inference_steps": "Denoise steps",
    "guidance_scale": "Guidance scale", "controlnet_conditioning_scale": "IdentityNet strength",
    "ip_adapter_scale": "Identity strength (IP-Adapter)", "seed": "Seed", "width": "Width (px)",
    "height": "Height (px)", "use_gemini_analysis": "Analyse the face with Gemini",
    "face_detail": "Refine the face", "face_detail_strength": "Face refinement strength",
    "face_region_emphasis": "Keep identity to the face", "candidates": "Candidates",
    "min_identity_score": "Minimum identity score", "base_model": "Base model",
}


def _field_title(name: str, _info: object) -> str:
    return TITLES.get(name) or name.replace("_", " ").capitalize()


class GenerationParams(BaseModel):
    """Everything a caller can set about one generation job."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, field_title_generator=_field_title)

    body_type: BodyType = Field("average", description="slim, athletic, muscular, average or curvy.")
    height_cm: float = Field(170, ge=50, le=300, description="Height in centimetres, 50-300.")
    weight_kg: float = Field(65, ge=20, le=500, description="Weight in kilograms, 20-500.")
    gender: Gender = Field("other", description="male, female or other.")
    ethnicity: str | None = Field(None, max_length=64, description="Free text; filled by appearance analysis when empty.")
    skin_tone: str | None = Field(None, max_length=64, description="Free text; filled by appearance analysis when empty.")
    pose: Pose = Field("standing", description="standing, walking or sitting; a pose photo (pose_image) replaces it.")
    clothing: str = Field("casual minimal", max_length=200, description="Clothing description.")
    style: StyleName = Field(DEFAULT_STYLE, description="Look of the image, one of the presets GET /api/v1/info "
                             "lists under styles (photographic, cinematic, watercolor, ...).")
    scene: str | None = Field(None, max_length=200, description="Where the person is: free text such as "
                              "'on a beach at sunset' (background and setting).")
    num_images: int = Field(4, ge=1, le=4, description="Variations, 1-4, generated in one batch.")
    mode: Mode = Field("fast", description="fast: LCM-LoRA, 5 steps, guidance 1.5; quality: Euler, 30 steps, guidance 5.")
    num_inference_steps: int | None = Field(None, ge=1, le=100, description="Default: 5 in fast mode, 30 in quality mode.")
    guidance_scale: float | None = Field(None, ge=0, le=20, description="Default: 1.5 in fast mode (at most 2), 5 in quality mode. "
                                          "Above 1 the negative prompt applies and each step runs the batch twice.")
    controlnet_conditioning_scale: float = Field(0.8, ge=0, le=2, description="IdentityNet (keypoint ControlNet) strength.")
    ip_adapter_scale: float = Field(0.8, ge=0, le=2, description="Identity (face embedding) strength.")
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="Image i uses seed + i; random when empty.")
    width: int | None = Field(None, ge=64, le=2048, multiple_of=8, description="Output width in pixels, multiple of 8. "
                              "Default: 832 (SDXL's 832x1216 portrait bucket; 104 on the tiny profile).")
    height: int | None = Field(None, ge=64, le=2048, multiple_of=8, description="Output height in pixels, multiple of 8. "
                               "Default: 1216 (152 on the tiny profile).")
    use_gemini_analysis: bool = Field(False, description="Send the face to Gemini for skin tone/ethnicity/age (opt-in).")
    face_detail: bool = Field(True, description="After the base images, redraw each image's face with InstantID img2img "
                              "on a close crop and blend it back (no face found: the image is kept as is).")
    face_detail_strength: float = Field(0.4, ge=0, le=1, description="How much the face-detail pass redraws, 0-1: "
                                        "the share of the denoise schedule it reruns (0 changes nothing).")
    face_region_emphasis: bool = Field(True, description="Restrict IdentityNet and the face attention to the face "
                                       "region of the layout, so identity features do not bleed over body and "
                                       "background (the official InstantID app's 'Enhance non-face region').")
    candidates: int | None = Field(
        None, ge=1, le=MAX_CANDIDATES,
        description=f"Images generated in one batch to choose from, 1-{MAX_CANDIDATES} and at least num_images; "
                    "the num_images with the highest identity score are returned, best first. Default: num_images.")
    min_identity_score: float | None = Field(
        None, ge=-1, le=1,
        description="Returned images whose identity score is below it (or that show no face) are marked "
                    "below_threshold: true; they are still returned. Default: no threshold.")

    base_model: str | None = Field(None, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$",
                                   description="The SDXL base checkpoint to generate with: one of the names GET "
                                   "/api/v1/info lists under base_models (operators add them with 'idbody "
                                   "models add-base'). Default: the profile's own base.",
                                   examples=["juggernaut"])

    output_format: OutputFormat = Field(DEFAULT_FORMAT, description="png (lossless), jpeg or webp: the format "
                                        "of the stored images, their Content-Type and file names.")
    output_quality: int | None = Field(None, ge=1, le=100, description="jpeg and webp only: encoder quality "
                                       "1-100. Default: 90.")

    @field_validator("ethnicity", "skin_tone", "clothing", "scene")
    @classmethod
    def _printable_text(cls, value: str | None) -> str | None:
        # free text ends up in the prompt: no NUL or other control characters, no lone surrogates
        # (what invalid UTF-8 becomes through surrogateescape)
        if value is not None and any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
            raise ValueError("must be printable text: no control characters (such as NUL) or invalid UTF-8")
        return value

    # mode is declared before these fields, so their validators can read it
    @field_validator("guidance_scale")
    @classmethod
    def _fast_mode_guidance(cls, value: float | None, info: ValidationInfo) -> float | None:
        if info.data.get("mode") == "fast" and value is not None and value > LCM_MAX_GUIDANCE:
            raise ValueError(f"must be at most {LCM_MAX_GUIDANCE:g} in fast (LCM) mode; use mode=quality for "
                             f"guidance above {LCM_MAX_GUIDANCE:g}")
        return value

    @field_validator("num_inference_steps")
    @classmethod
    def _fast_mode_steps(cls, value: int | None, info: ValidationInfo) -> int | None:
        if info.data.get("mode") == "fast" and value is not None and value > LCM_MAX_STEPS:
            # LCMScheduler samples from a 50-step original schedule and refuses more steps
            raise ValueError(f"must be at most {LCM_MAX_STEPS} in fast (LCM) mode; use mode=quality for more steps")
        return value

    @field_validator("output_quality")
    @classmethod
    def _lossy_quality(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and info.data.get("output_format") == "png":
            raise ValueError("applies only to the lossy formats; send output_format=jpeg or webp, "
                             "or leave output_quality out for png")
        return value

    @field_validator("candidates")
    @classmethod
    def _enough_candidates(cls, value: int | None, info: ValidationInfo) -> int | None:
        wanted = info.data.get("num_images")
        if value is not None and wanted is not None and value < wanted:
            raise ValueError(f"must be at least num_images ({wanted}): the best num_images are chosen from them")
        return value

    def candidate_count(self) -> int:
        """How many images the batch generates (re-ranking keeps the best ``num_images``)."""
        return int(self.candidates or self.num_images)

    def steps(self) -> int:
        return int(self.num_inference_steps or MODE_DEFAULTS[self.mode]["num_inference_steps"])

    def guidance(self) -> float:
        g = self.guidance_scale
        return float(MODE_DEFAULTS[self.mode]["guidance_scale"] if g is None else g)

    def body_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in BODY_PARAM_KEYS}

    def prompt_params(self) -> dict[str, Any]:
        """What ``worker.engine.prompts`` builds the prompts from: the body parameters, style and scene."""
        return {k: getattr(self, k) for k in PROMPT_PARAM_KEYS}


def parse_params(data: dict[str, Any]) -> GenerationParams:
    """Validate ``data`` into GenerationParams, raising IdentityBodyError(invalid_parameter) that names
    the field and its range.

    Example::

        parse_params({"height_cm": 20})
        # IdentityBodyError: height_cm: Height in centimetres, 50-300. (got 20)
    """
    try:
        return GenerationParams.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ())) or None
        described = GenerationParams.model_fields.get(field or "")
        hint = f" {described.description}" if described is not None and described.description else ""
        got = first.get("input")
        got_txt = "" if isinstance(got, dict) else f" (got {got!r})"
        message = f"{field}: {first['msg']}.{hint}{got_txt}" if field else f"{first['msg']}."
        code = ErrorCode.INVALID_PARAMETER
        raise IdentityBodyError(code, message, field=field) from None
