"""Where each part of the engine lives inside one model folder. The download command fills it,
``verify`` checks it, and the loaders read it; the tiny profile writes the same layout.

    <model_dir>/
      sdxl/                              stabilityai/stable-diffusion-xl-base-1.0 (diffusers layout)
      vae-fp16-fix/                      madebyollin/sdxl-vae-fp16-fix (decodes in fp16 without NaNs)
      instantid/ControlNetModel/         IdentityNet: config.json + diffusion_pytorch_model.safetensors
      instantid/ip-adapter.bin           Resampler + per-layer to_k_ip/to_v_ip
      lcm-lora/pytorch_lora_weights.safetensors   latent-consistency/lcm-lora-sdxl
      models/antelopev2/*.onnx           InsightFace antelopev2 (detector + recognizer + 3 more)
      pose-controlnet/                   optional: an SDXL OpenPose ControlNet (`download --with pose`)
"""

from __future__ import annotations

from pathlib import Path

SDXL_DIR = "sdxl"
VAE_DIR = "vae-fp16-fix"
CONTROLNET_DIR = "instantid/ControlNetModel"
IP_ADAPTER_FILE = "instantid/ip-adapter.bin"
LCM_LORA_DIR = "lcm-lora"
LCM_LORA_FILE = "lcm-lora/pytorch_lora_weights.safetensors"
ANTELOPEV2_DIR = "models/antelopev2"
POSE_CONTROLNET_DIR = "pose-controlnet"

DETECTOR_FILE = "scrfd_10g_bnkps.onnx"
RECOGNIZER_FILE = "glintr100.onnx"


def part(model_dir: Path, relative: str) -> Path:
    return Path(model_dir) / relative
