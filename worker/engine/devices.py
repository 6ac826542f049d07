"""Every decision about device, dtype, offload and VAE precision, taken once and logged.

The habit is ComfyUI's model_management: call sites never pick a device or dtype themselves; they
ask the DevicePolicy decided from settings at load time.

Example::

    policy = DevicePolicy.decide(settings)      # logs "engine device: cuda fp16 ..."
    pipe = Pipeline.from_pretrained(folder, dtype=policy.dtype)
    policy.place(pipe)                          # .to(device) or model offload, VAE tiling
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DevicePolicy:
    device: str                 # "cuda" or "cpu"
    dtype_name: str             # "float16" or "float32"
    cpu_offload: bool           # enable_model_cpu_offload() instead of .to(device)
    vae_tiling: bool            # enable_vae_tiling()
    reason: str

    @property
    def dtype(self):
        import torch

        return getattr(torch, self.dtype_name)

    @property
    def variant(self) -> str | None:
        """The weight-file variant to prefer: fp16 files where half precision runs."""
        return "fp16" if self.dtype_name == "float16" else None

    @classmethod
    def decide(cls, settings, cuda_available: bool | None = None) -> "DevicePolicy":
        """CUDA in fp16 when available (or asked for), CPU in fp32 otherwise. Offload only on
        CUDA (on the CPU there is nothing to offload to); VAE tiling wherever it is asked for."""
        if cuda_available is None:
            import torch

            cuda_available = torch.cuda.is_available()
        wanted = settings.device
        if wanted == "cuda" and not cuda_available:
            log.warning("settings.device is cuda but no CUDA device is visible; using the CPU")
        on_cuda = cuda_available and wanted in ("auto", "cuda")
        if on_cuda:
            policy = cls("cuda", "float16", bool(settings.cpu_offload), bool(settings.vae_tiling),
                         reason=f"CUDA available (settings.device={wanted})")
        else:
            why = "settings.device=cpu" if wanted == "cpu" else "no CUDA device"
            policy = cls("cpu", "float32", False, bool(settings.vae_tiling), reason=why)
            if settings.cpu_offload:
                log.info("cpu_offload ignored: the engine already runs on the CPU")
        log.info("engine device: %s %s, cpu_offload=%s, vae_tiling=%s (%s)", policy.device,
                 policy.dtype_name, policy.cpu_offload, policy.vae_tiling, policy.reason)
        return policy

    def place(self, pipe) -> None:
        """Move a loaded pipeline where it runs, and set its memory savers."""
        if self.cpu_offload:
            pipe.enable_model_cpu_offload()
        else:
            pipe.to(self.device)
        pose = getattr(pipe, "pose_controlnet", None)   # not a registered component: placed here
        if pose is not None:
            pose.to(self.device)
        if self.vae_tiling:
            pipe.vae.enable_tiling()
        # The fp16-fix VAE decodes in half precision without NaNs, so it is never upcast to fp32.
        # A VAE whose config still asks for upcasting keeps diffusers' own upcast-on-decode.
        vae = pipe.vae
        log.info("vae: %s, force_upcast=%s", vae.dtype, getattr(vae.config, "force_upcast", None))

    def generator_device(self) -> str:
        """Seeded generators live on the CPU so a seed gives the same noise on every machine."""
        return "cpu"
