"""Load the engine from one model folder: the same code path for the released weights and the
tiny profile (worker.models.layout says where each part lives).

Order: SDXL base (required) -> fp16-fix VAE -> IdentityNet + ip-adapter.bin (InstantID; on any
failure the engine falls back to plain SDXL) -> LCM-LoRA (fused) -> schedulers -> device.

Example::

    engine = load_engine(Path("models"), DevicePolicy.decide(settings))
    engine.method      # "instantid" or "sdxl_fallback"
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.errors import ErrorCode, IdentityBodyError
from worker.engine.devices import DevicePolicy
from worker.engine.memory_plan import MemoryPlan
from worker.models import layout
from worker.models.bases import WEIGHT_NAMES
from worker.models.bases import weight_variant as _variant

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

    from worker.engine.base_switch import BaseSwitch
    from worker.engine.fast_mode import FastEngine
    from worker.engine.lcm_mode import ModeSwitch

log = logging.getLogger(__name__)

FALLBACK_NOTE = "Used SDXL fallback (InstantID not available). Results may require head stitching."
DOWNLOAD_COMMAND = "idbody models download"
SDXL_COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")
SDXL_CONFIG_FILES = ("model_index.json", "scheduler/scheduler_config.json", "tokenizer/vocab.json",
                     "tokenizer_2/vocab.json", *(f"{c}/config.json" for c in SDXL_COMPONENTS))


POSE_PART = "pose-controlnet"
POSE_PROMPT_ONLY = "pose-prompt-only"   # what a result's parts say when no pose ControlNet is loaded


@dataclass
class Engine:
    """A loaded pipeline and what the generation code needs to know about it."""

    pipe: DiffusionPipeline                  # InstantIDPipeline, or the plain SDXL fallback
    method: str                              # "instantid" | "sdxl_fallback"
    policy: DevicePolicy
    modes: ModeSwitch
    fallback_reason: str | None = None
    loaded_parts: list[str] = field(default_factory=list)
    fast: FastEngine | None = None           # set by worker.engine.fast_mode.make_fast
    memory_plan: MemoryPlan | None = None    # rows_per_pass: the most images one denoise pass may run
    bases: BaseSwitch | None = None          # the base checkpoints and which one is resident

    @property
    def note(self) -> str | None:
        return FALLBACK_NOTE if self.method == "sdxl_fallback" else None

    @property
    def pose_control(self) -> bool:
        """The body pose is drawn as a skeleton for a pose ControlNet (else: prompt only)."""
        return POSE_PART in self.loaded_parts

    @property
    def parts(self) -> list[str]:
        """What makes an image, as a result reports it: the loaded parts, and how the pose is set."""
        return [*self.loaded_parts, *(() if self.pose_control else (POSE_PROMPT_ONLY,))]


def _has_weights(folder: Path, variant: str | None) -> bool:
    suffixes = [f".{variant}", ""] if variant else [""]
    return any((folder / n.format(v=s)).is_file() for n in WEIGHT_NAMES for s in suffixes)


def missing_base_files(model_dir: Path) -> list[str]:
    """SDXL base files that must exist for anything to load (relative to model_dir)."""
    sdxl = layout.part(model_dir, layout.SDXL_DIR)
    missing = [f"{layout.SDXL_DIR}/{f}" for f in SDXL_CONFIG_FILES if not (sdxl / f).is_file()]
    missing += [f"{layout.SDXL_DIR}/{c}/<weights>" for c in SDXL_COMPONENTS
                if (sdxl / c).is_dir() and not _has_weights(sdxl / c, "fp16")]
    return missing


def models_missing_error(model_dir: Path, missing: list[str], cause: str = "") -> IdentityBodyError:
    listed = ", ".join(missing) if missing else "(files present but unreadable)"
    why = f" ({cause})" if cause else ""
    return IdentityBodyError(
        ErrorCode.MODELS_MISSING,
        f"The SDXL base model is not in {model_dir}: missing {listed}{why}. "
        f"Fetch the models with `{DOWNLOAD_COMMAND}`.",
        missing=missing, command=DOWNLOAD_COMMAND,
    )


def _load_base(model_dir: Path, policy: DevicePolicy):
    from diffusers import AutoencoderKL

    from worker.engine.vae_memory import fallback_pipeline_class

    sdxl = layout.part(model_dir, layout.SDXL_DIR)
    missing = missing_base_files(model_dir)
    if missing:
        raise models_missing_error(model_dir, missing)
    extra = {}
    vae_dir = layout.part(model_dir, layout.VAE_DIR)
    if (vae_dir / "config.json").is_file():
        extra["vae"] = AutoencoderKL.from_pretrained(vae_dir, dtype=policy.dtype, variant=_variant(vae_dir, policy))
    else:
        log.warning("no fp16-fix VAE in %s: using SDXL's own VAE (upcast to fp32 to decode in fp16)", vae_dir)
    try:
        return fallback_pipeline_class().from_pretrained(
            sdxl, dtype=policy.dtype, variant=_variant(sdxl / "unet", policy), **extra)
    except (OSError, ValueError) as exc:
        raise models_missing_error(model_dir, [], cause=str(exc)) from exc


def _load_instantid(model_dir: Path, base, policy: DevicePolicy):
    """The InstantID pipeline over the base components, or raise why it cannot be had."""
    from diffusers import ControlNetModel

    from worker.engine.instantid_pipeline import InstantIDPipeline

    cn_dir = layout.part(model_dir, layout.CONTROLNET_DIR)
    ip_file = layout.part(model_dir, layout.IP_ADAPTER_FILE)
    for needed in (cn_dir / "config.json", ip_file):
        if not needed.is_file():
            raise FileNotFoundError(f"missing {needed.relative_to(model_dir)}")
    controlnet = ControlNetModel.from_pretrained(cn_dir, dtype=policy.dtype, variant=_variant(cn_dir, policy))
    pipe = InstantIDPipeline(**_components(base), controlnet=controlnet)
    pipe.load_ip_adapter(str(model_dir), subfolder=str(Path(layout.IP_ADAPTER_FILE).parent),
                         weight_name=Path(layout.IP_ADAPTER_FILE).name, image_encoder_folder=None)
    return pipe


def _load_pose_controlnet(model_dir: Path, policy: DevicePolicy):
    """The optional pose ControlNet, or None (logged: the pose is then asked for in the prompt only)."""
    from diffusers import ControlNetModel

    folder = layout.part(model_dir, layout.POSE_CONTROLNET_DIR)
    if not (folder / "config.json").is_file():
        log.info("no pose ControlNet in %s: the pose comes from the prompt only "
                 "(idbody models download --with pose fetches one)", folder)
        return None
    try:
        return ControlNetModel.from_pretrained(folder, dtype=policy.dtype, variant=_variant(folder, policy))
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        log.warning("the pose ControlNet in %s did not load (%s: %s): the pose comes from the prompt only",
                    folder, type(exc).__name__, exc)
        return None


def _components(base) -> dict[str, Any]:
    return {k: v for k, v in base.components.items() if k not in ("image_encoder", "feature_extractor")}


def _fallback(base):
    # Always: diffusers installs the IP-Adapter attention processors before it builds the image
    # projection, so a load that failed between the two leaves them in with no encoder_hid_proj;
    # they would then read the last 16 text tokens as image tokens (wrong images, no error).
    base.unload_ip_adapter()
    return base


def _load_lcm_lora(model_dir: Path, pipe) -> bool:
    from worker.engine.lcm_mode import LCM_ADAPTER

    lora = layout.part(model_dir, layout.LCM_LORA_FILE)
    if not lora.is_file():
        log.warning("no LCM-LoRA at %s: fast mode runs Euler with its step count (slower, same API)", lora)
        return False
    pipe.load_lora_weights(str(lora.parent), weight_name=lora.name, adapter_name=LCM_ADAPTER)
    return True


def load_engine(model_dir: Path, policy: DevicePolicy, fast=None) -> Engine:
    """Load everything from ``model_dir``; raise IdentityBodyError(models_missing) when even the
    SDXL base cannot load. ``fast``: worker.engine.fast_mode.FastOptions, or None for the plain
    engine."""
    model_dir = Path(model_dir)
    base = _load_base(model_dir, policy)
    parts = ["sdxl", "vae-fp16-fix" if (layout.part(model_dir, layout.VAE_DIR) / "config.json").is_file() else "sdxl-vae"]
    try:
        pipe, method, reason = _load_instantid(model_dir, base, policy), "instantid", None
        parts += ["identitynet", "ip-adapter"]
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        reason = f"{type(exc).__name__}: {exc}"
        log.warning("InstantID parts unavailable (%s); using the plain SDXL fallback", reason)
        pipe, method = _fallback(base), "sdxl_fallback"
    if method == "instantid" and (pose := _load_pose_controlnet(model_dir, policy)) is not None:
        pipe.pose_controlnet = pose
        parts.append(POSE_PART)
    lcm = _load_lcm_lora(model_dir, pipe)
    if lcm:
        parts.append("lcm-lora")
    log.info("engine loaded from %s: method=%s parts=%s", model_dir, method, parts)
    engine = finish_engine(pipe, method, base.scheduler.config, lcm, policy, reason, parts, fast=fast)
    engine.bases = base_switch(engine, model_dir)
    return engine


def base_switch(engine: Engine, model_dir: Path) -> BaseSwitch:
    """The engine's base checkpoints (worker.models.bases): the profile's, resident, and the added
    ones. A base's own VAE is switched only where the engine decodes with the base's VAE; the
    fp16-fix VAE, when there, serves every base (SDXL fine-tunes keep SDXL's latent space)."""
    from worker.engine.base_switch import TEXT_AND_UNET, BaseSwitch
    from worker.models.bases import list_bases

    own_vae = "sdxl-vae" in engine.loaded_parts
    bases = list_bases(model_dir)
    if len(bases) > 1:
        log.info("base checkpoints: %s (resident: %s)", [b.name for b in bases], bases[0].name)
    return BaseSwitch(engine.pipe, engine.modes, engine.policy, bases, TEXT_AND_UNET + (("vae",) if own_vae else ()))


def finish_engine(pipe, method: str, scheduler_config, lcm_loaded: bool, policy: DevicePolicy,
                  fallback_reason: str | None = None, parts: list[str] | None = None, fast=None) -> Engine:
    """Fuse the LoRA, keep both schedulers, plan the memory and place the pipeline, make it fast if
    asked, then apply the plan's memory savers: the tail every engine shares (the full-size bench assembles its pipeline in memory and ends here too)."""
    from worker.engine.lcm_mode import ModeSwitch

    plan = policy.plan_for(pipe)
    fast = fast_options_under(plan, fast)
    # The fast engine bakes the LoRA from the unfused base weights: no PEFT fuse first.
    modes = ModeSwitch(pipe, scheduler_config, lcm_loaded=lcm_loaded, fuse_now=fast is None)
    policy.move(pipe, plan)
    pipe.set_progress_bar_config(disable=True)
    engine = Engine(pipe=pipe, method=method, policy=policy, modes=modes, fallback_reason=fallback_reason,
                    loaded_parts=list(parts or []), memory_plan=plan)
    if fast is not None:
        from worker.engine.fast_mode import make_fast

        make_fast(engine, fast)
    policy.save_memory(pipe, plan)
    return engine


def fast_options_under(plan: MemoryPlan, fast):
    """The fast engine's options as the memory plan allows them: no compiling where the plan
    says so (it logged why), and no fast engine at all under an offloading plan: its fused q/k/v
    weights share one storage, and offload hooks move each weight on its own, which would split
    them (the LoRA's q/k/v deltas would then miss the fused weights)."""
    if fast is None:
        return None
    if plan.offloads:
        log.info("fast engine off under the %s plan (offload hooks would split its fused projections)", plan.name)
        return None
    return fast if plan.compile or fast.compile_mode is None else replace(fast, compile_mode=None)
