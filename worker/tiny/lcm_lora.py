"""A tiny LCM-LoRA in the released file's key format, for any UNet.

latent-consistency/lcm-lora-sdxl was saved by diffusers' LCM distillation script in the kohya
style: ``lora_unet_<module path with dots as underscores>.{lora_down.weight, lora_up.weight,
alpha}`` over the attention projections, transformer proj_in/proj_out, feed-forwards, ResNet
convs and shortcuts, the down/up-sampler convs and the time-embedding projections.
``load_lora_weights`` converts that format itself, so the tiny file exercises the same
conversion as the real one.

Example::

    save_file(lcm_lora_state_dict(unet, rank=4, seed=0), "lcm-lora/pytorch_lora_weights.safetensors")
"""

from __future__ import annotations

import torch

_LINEAR_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
                   "time_emb_proj")
# The distillation script's convolution targets: ResNet convs and shortcuts, and the down/up
# samplers' convs (their kohya names are the ones a converter is most likely to miss).
_RESNET_CONV_TARGETS = ("conv1", "conv2", "conv_shortcut")
_SAMPLER_CONV_TARGETS = ("downsamplers.0.conv", "upsamplers.0.conv")


def _targets(unet) -> list[tuple[str, torch.nn.Module]]:
    picked = []
    for name, module in unet.named_modules():
        if isinstance(module, torch.nn.Linear) and name.endswith(_LINEAR_TARGETS):
            picked.append((name, module))
        elif isinstance(module, torch.nn.Conv2d) and (
                (name.endswith(_RESNET_CONV_TARGETS) and "resnets" in name) or name.endswith(_SAMPLER_CONV_TARGETS)):
            picked.append((name, module))
    return picked


def lcm_lora_state_dict(unet, rank: int = 4, seed: int = 0, scale: float = 0.05) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for name, module in _targets(unet):
        key = "lora_unet_" + name.replace(".", "_")
        if isinstance(module, torch.nn.Linear):
            down = torch.randn(rank, module.in_features, generator=gen)
            up = torch.randn(module.out_features, rank, generator=gen)
        else:
            kh, kw = module.kernel_size
            down = torch.randn(rank, module.in_channels, kh, kw, generator=gen)
            up = torch.randn(module.out_channels, rank, 1, 1, generator=gen)
        sd[f"{key}.lora_down.weight"] = down * scale / down[0].numel() ** 0.5
        sd[f"{key}.lora_up.weight"] = up * scale
        sd[f"{key}.alpha"] = torch.tensor(float(rank))
    return sd
