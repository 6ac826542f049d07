"""Every decision about device, dtype and memory, taken once and logged.

The habit is ComfyUI's model_management: call sites never pick a device, a dtype or an offload
themselves; they ask the DevicePolicy decided from settings, which at load time measures the
pipeline and the card and applies the memory plan (worker.engine.memory_plan) it picks.

Example::

    policy = DevicePolicy.decide(settings)      # logs "engine device: cuda float16 ..."
    pipe = Pipeline.from_pretrained(folder, dtype=policy.dtype)
    plan = policy.plan_for(pipe)                # logs "memory plan group-offload: ..."
    policy.move(pipe, plan)                     # resident plans: .to(device)
    policy.save_memory(pipe, plan)              # fp8 storage, offload hooks, VAE tiling
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from worker.engine.memory_plan import (
    CPU_PLAN,
    FP8_SKIPPED_LAYERS,
    GIB,
    TILE_PX,
    MemoryPlan,
    ModelWeights,
    Shape,
    card_free_gib,
    choose_plan,
    cpu_plan,
)

log = logging.getLogger(__name__)

NETWORKS = ("unet", "controlnet", "pose_controlnet", "text_encoder", "text_encoder_2", "vae")

# Switches the memory plan replaced: an operator upgrading with them still set would otherwise
# believe a 4 GB card is offloading while the worker plans from the card alone.
RETIRED_SETTINGS = {
    "IDBODY_CPU_OFFLOAD": "IDBODY_MEMORY_PLAN=model-offload (or group-offload on a 4 GB card)",
    "IDBODY_VAE_TILING": "IDBODY_MEMORY_PLAN (the plan turns VAE tiling on where the card needs it)",
}


def warn_retired_settings(environ: Mapping[str, str] = os.environ) -> list[str]:
    """Log a warning for each retired memory switch still set; the names found."""
    found = [name for name in RETIRED_SETTINGS if name in environ]
    for name in found:
        log.warning("%s is no longer read and has no effect; use %s", name, RETIRED_SETTINGS[name])
    return found


@dataclass(frozen=True)
class DevicePolicy:
    device: str                 # "cuda" or "cpu"
    dtype_name: str             # "float16" or "float32"
    cpu_offload: bool = False   # IDBODY_MEMORY_PLAN names an offloading plan (known before loading)
    reason: str = ""
    memory_plan: str = "auto"   # IDBODY_MEMORY_PLAN
    max_rows: int = 8           # settings.max_batch_images: the most rows a plan gives a pass
    plan_size: tuple[int, int] | None = None    # the job size planned for; None: the engine's default
    compile_wanted: bool = False
    card_gib: float | None = None   # plan as if the card had this much memory (the bench's emulated cards)

    @property
    def dtype(self):
        import torch

        return getattr(torch, self.dtype_name)

    @property
    def variant(self) -> str | None:
        """The weight-file variant to prefer: fp16 files where half precision runs."""
        return "fp16" if self.dtype_name == "float16" else None

    @classmethod
    def decide(cls, settings, cuda_available: bool | None = None) -> DevicePolicy:
        """CUDA in fp16 when available (or asked for), CPU in fp32 otherwise; the memory plan is
        picked at load time (``plan_for``), from the loaded networks and the free memory."""
        warn_retired_settings()
        if cuda_available is None:
            import torch

            cuda_available = torch.cuda.is_available()
        wanted = settings.device
        if wanted == "cuda" and not cuda_available:
            log.warning("settings.device is cuda but no CUDA device is visible; using the CPU")
        on_cuda = cuda_available and wanted in ("auto", "cuda")
        size = (settings.default_width, settings.default_height)
        common = {"memory_plan": settings.memory_plan, "max_rows": settings.max_batch_images,
                  "plan_size": size if all(size) else None, "compile_wanted": settings.engine_compile}
        if on_cuda:
            offloads = settings.memory_plan in ("model-offload", "group-offload")
            policy = cls("cuda", "float16", offloads, reason=f"CUDA available (settings.device={wanted})", **common)
        else:
            why = "settings.device=cpu" if wanted == "cpu" else "no CUDA device"
            policy = cls("cpu", "float32", False, reason=why, **common)
            if settings.memory_plan not in ("auto", CPU_PLAN):
                log.info("memory_plan=%s ignored: the engine runs on the CPU", settings.memory_plan)
        log.info("engine device: %s %s, memory_plan=%s (%s)", policy.device, policy.dtype_name,
                 policy.memory_plan, policy.reason)
        return policy

    def plan_for(self, pipe) -> MemoryPlan:
        """The memory plan for this loaded pipeline on this device, logged."""
        if self.device != "cuda":
            plan = cpu_plan(self.max_rows)
        else:
            from worker.engine.output_size import default_size

            shape = Shape(*(self.plan_size or default_size(pipe)))
            free = card_free_gib(self.card_gib) if self.card_gib else free_gib(pipe)
            plan = choose_plan(loaded_weights(pipe), free, shape, self.max_rows, self.memory_plan,
                               self.compile_wanted)
        log.info(plan.describe())
        return plan

    def move(self, pipe, plan: MemoryPlan) -> None:
        """Plans that keep every network resident move them now (the fast engine then bakes and
        fuses on the device); offloading plans keep them on the CPU, where the offload hooks
        (``save_memory``) fetch them from."""
        device = "cpu" if plan.offloads else plan.device
        pipe.to(device)
        pose = getattr(pipe, "pose_controlnet", None)   # not a registered component: moved here
        if pose is not None:
            pose.to(device)

    def save_memory(self, pipe, plan: MemoryPlan) -> None:
        """fp8 storage, offload hooks and VAE tiling, after the fast engine rearranged the networks
        (the hooks must see its fused layers)."""
        import torch

        networks = {name: m for name in NETWORKS if (m := getattr(pipe, name, None)) is not None}
        if plan.fp8:
            from diffusers.hooks import apply_layerwise_casting

            for name in plan.fp8:
                if name in networks:
                    apply_layerwise_casting(networks[name], storage_dtype=torch.float8_e4m3fn,
                                            compute_dtype=pipe.unet.dtype,
                                            skip_modules_pattern=("norm", "embed", *FP8_SKIPPED_LAYERS))
        pose = networks.get("pose_controlnet")
        device = torch.device(plan.device)
        if plan.name == "model-offload":
            from accelerate import cpu_offload_with_hook

            pipe.enable_model_cpu_offload(device=device)
            if pose is not None:
                cpu_offload_with_hook(pose, device)
        elif plan.name == "group-offload":
            from diffusers.hooks import apply_group_offloading

            streams = device.type == "cuda"
            for module in networks.values():
                apply_group_offloading(module, onload_device=device, offload_type="leaf_level",
                                       use_stream=streams, record_stream=streams)
        if plan.vae_tiling:
            vae = pipe.vae
            vae.enable_tiling()
            vae.enable_slicing()
            vae.tile_sample_min_size = min(TILE_PX, vae.tile_sample_min_size)
            vae.tile_latent_min_size = vae.tile_sample_min_size // pipe.vae_scale_factor
        # The fp16-fix VAE decodes in half precision without NaNs, so it is never upcast to fp32.
        # A VAE whose config still asks for upcasting keeps diffusers' own upcast-on-decode.
        log.info("vae: %s, force_upcast=%s", pipe.vae.dtype, getattr(pipe.vae.config, "force_upcast", None))

    def generator_device(self) -> str:
        """Seeded generators live on the CPU so a seed gives the same noise on every machine."""
        return "cpu"


def loaded_weights(pipe) -> ModelWeights:
    """Bytes of each loaded network in the pipeline's compute dtype (as the GPU would hold them)."""
    itemsize = pipe.unet.dtype.itemsize
    sizes = {name: sum(p.numel() for p in m.parameters()) * itemsize
             for name in NETWORKS if (m := getattr(pipe, name, None)) is not None}
    return ModelWeights(**sizes)


def free_gib(pipe) -> float:
    """Free GPU memory, counting as free what the pipeline itself already holds there (the bench
    builds its networks on the GPU before they are placed)."""
    import torch

    free, _total = torch.cuda.mem_get_info()
    held = sum(p.numel() * p.element_size() for name in NETWORKS if (m := getattr(pipe, name, None)) is not None
               for p in m.parameters() if p.is_cuda)
    return (free + held) / GIB

