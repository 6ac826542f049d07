"""``GET /api/v1/info``: what a client (the web page) needs to draw its form and say what it is
talking to — the live workers' model profile, whether a key is needed, the default output size
and size choices, the generation parameters' JSON schema (the ranges of ``shared.params``,
never a copy), and the memory plan each live worker runs under. Public: it tells nothing about
jobs or keys.
"""

from __future__ import annotations

from typing import Any

import redis
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from api.base_models import offered_bases
from api.deps import SettingsDep, StoreDep
from shared.face_images import MAX_FACE_IMAGES
from shared.output_formats import format_list
from shared.params import GenerationParams
from shared.settings import Settings
from shared.size_presets import default_output_size, size_presets
from shared.styles import style_list

router = APIRouter(prefix="/api/v1", tags=["info"])

TINY_NOTICE = (
    "This server runs the tiny profile: small models with random weights, so every image is noise "
    "by design. It runs the whole path (face analysis, generation, storage) on any CPU in seconds. "
    "For real images, run it on a machine with an NVIDIA GPU: 'idbody models download', then "
    "'idbody up' (or 'docker compose up'), which picks the instantid profile."
)
NO_WORKER_NOTICE = "No worker is running yet: jobs wait in the queue until one starts."
POSE_PHOTOS_TEXT = ("Send pose_image, a photo of anyone, to take the pose from it. With a pose ControlNet the body "
                    "follows the photo's skeleton; without one the photo only places the head.")


class ServerInfo(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "profiles": ["tiny"], "workers": 1, "auth_required": False,
        "default_size": {"width": 256, "height": 256},
        "size_presets": [{"width": 256, "height": 256}, {"width": 512, "height": 512}],
        "notice": TINY_NOTICE,
        "max_face_images": 5,
        "styles": [{"name": "photographic", "description": "A natural photograph in daylight (the default)."},
                   {"name": "watercolor", "description": "A watercolor painting: soft washes of colour on paper."}],
        "output_formats": [{"name": "png", "content_type": "image/png", "extension": "png", "lossy": False,
                            "description": "Lossless; the largest files."},
                           {"name": "webp", "content_type": "image/webp", "extension": "webp", "lossy": True,
                            "description": "Lossy; output_quality 1-100 (default 90)."}],
        "base_models": [{"name": "sdxl-base-1.0", "default": True, "digest": "83e012a805b8"},
                        {"name": "juggernaut", "default": False, "digest": "d91b2c1e07aa"}],
        "pose_photos": {"accepted": True, "readers": 1, "pose_controlnet": False,
                        "description": POSE_PHOTOS_TEXT},
        "params": {"type": "object", "properties": {"height_cm": {
            "type": "number", "minimum": 50, "maximum": 300, "default": 170}}},
        "memory_plans": [{"worker_id": "gpu0@host:4242", "name": "group-offload", "device": "cuda",
                          "fp8": ["controlnet", "text_encoder", "text_encoder_2"], "vae_tiling": True,
                          "rows_per_pass": 2, "compile": False, "predicted_peak_gib": 2.03, "budget_gib": 2.6,
                          "size": [832, 1216], "reason": "3.2 GiB free: the fastest placement that fits",
                          "notes": []}],
    }]})

    profiles: list[str] = Field(description="Model profiles of the live workers: instantid, tiny; empty when none runs.")
    workers: int = Field(description="Live workers with a loaded pipeline.")
    auth_required: bool = Field(description="Whether requests need 'Authorization: Bearer <key>'.")
    default_size: dict[str, int] = Field(description="Output width and height of a job that sends none.")
    size_presets: list[dict[str, int]] = Field(description="Sizes the web page offers (up to 512x512 when only the tiny profile runs).")
    notice: str | None = Field(None, description="What a person should know first (the tiny profile's noise), if anything.")
    max_face_images: int = Field(description="Most face photos (of one person) a job may send: the field 'face_image' repeated.")
    styles: list[dict[str, str]] = Field(description="The style presets a job can name in 'style': name and a one-line description.")
    output_formats: list[dict[str, Any]] = Field(description="The formats a job can name in 'output_format': name, Content-Type, file extension, whether output_quality applies.")
    base_models: list[dict[str, Any]] = Field([], description="The SDXL base checkpoints a job can name in 'base_model', as the live workers offer them: name, whether it is the default (used when a job names none), and the first 12 hex digits of its sha256 (empty for a profile base whose digest is not on record; idbody models add-base adds one). Empty when no worker runs.")
    pose_photos: dict[str, Any] = Field(description="Whether the form takes pose_image (accepted), how many live workers can read a pose photo (readers), whether they have a pose ControlNet (pose_controlnet: true or false when every live worker agrees, null without workers or when they differ), and what a pose photo does.")
    params: dict[str, Any] = Field(description="JSON schema of the generation parameters: types, ranges, choices, defaults.")
    memory_plans: list[dict[str, Any]] = Field([], description="The memory plan of each live worker (`idbody plan` prints the same): where the networks live (name: resident, resident-fp8, model-offload, group-offload, or cpu), fp8 storage, VAE tiling, images per denoise pass, predicted peak and budget in GiB, whether compiling may run, and why.")


def server_info(settings: Settings, workers: list[dict[str, Any]]) -> dict[str, Any]:
    """The info JSON from the settings and the live workers' heartbeats.

    Example::

        server_info(settings, [{"profile": "tiny", "pipeline_loaded": True}])["profiles"]   # ["tiny"]
    """
    loaded = [w for w in workers if w.get("pipeline_loaded", True)]
    profiles = sorted({str(w["profile"]) for w in loaded if w.get("profile")})
    if not profiles and settings.model_profile != "auto":
        profiles = [settings.model_profile]  # what workers of this deployment will run
    default = default_output_size(settings, loaded)
    notice = TINY_NOTICE if "tiny" in profiles else (NO_WORKER_NOTICE if not loaded else None)
    return {
        "profiles": profiles,
        "workers": len(loaded),
        "auth_required": not settings.auth_disabled,
        "default_size": default,
        "size_presets": [{"width": w, "height": h} for w, h in size_presets(profiles)],
        "notice": notice,
        "max_face_images": MAX_FACE_IMAGES,
        "styles": style_list(),
        "output_formats": format_list(),
        "base_models": offered_bases(loaded),
        "pose_photos": pose_photos(loaded),
        "params": GenerationParams.model_json_schema(),
        "memory_plans": [{"worker_id": w.get("worker_id"), **w["memory_plan"]} for w in loaded if w.get("memory_plan")],
    }


def pose_photos(workers: list[dict[str, Any]]) -> dict[str, Any]:
    """What a pose photo does on these workers (their heartbeats say whether they read pose photos
    and have a pose ControlNet)."""
    controlnets = {w.get("pose_controlnet") for w in workers}
    return {"accepted": True, "readers": sum(1 for w in workers if w.get("pose_photos")),
            "pose_controlnet": controlnets.pop() if len(controlnets) == 1 else None,
            "description": POSE_PHOTOS_TEXT}


@router.get("/info", response_model=ServerInfo, summary="Model profile, auth, sizes and parameter ranges, for clients")
def info(settings: SettingsDep, store: StoreDep) -> dict[str, Any]:
    try:
        workers = store.live_workers()
    except redis.RedisError:  # the page still draws its form; readiness reports the outage
        workers = []
    return server_info(settings, workers)
