"""Count the FLOPs of one UNet + IdentityNet pass and one VAE decode of a 768x1024 image, on the
meta device (shapes only: no memory, no arithmetic), with torch's FLOP counter. These are the
numbers bench/README.md's floor is built from.

    python -m bench.flop_floor
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode


def count(width: int = 768, height: int = 1024) -> dict[str, float]:
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel

    from bench.full_size import SDXL_UNET, SDXL_VAE

    h, w = height // 8, width // 8
    with torch.device("meta"):
        unet = UNet2DConditionModel(**SDXL_UNET)
        controlnet = ControlNetModel.from_unet(unet)
        vae = AutoencoderKL(**SDXL_VAE)
        latents = torch.randn(1, 4, h, w)
        text = torch.randn(1, 77, 2048)
        faces = torch.randn(1, 16, 2048)
        cond = {"text_embeds": torch.randn(1, 1280), "time_ids": torch.randn(1, 6)}
        kps = torch.randn(1, 3, height, width)
        t = torch.tensor([500.0])
        with FlopCounterMode(display=False) as unet_flops:
            down, mid = controlnet(latents, t, encoder_hidden_states=faces, controlnet_cond=kps,
                                   added_cond_kwargs=cond, return_dict=False)
            unet(latents, t, encoder_hidden_states=text, added_cond_kwargs=cond,
                 down_block_additional_residuals=down, mid_block_additional_residual=mid)
        with FlopCounterMode(display=False) as vae_flops:
            vae.decode(latents)
    # The IP-Adapter's 16 extra keys per cross-attention add well under 1% and are not counted.
    return {"unet_identitynet_tflop": unet_flops.get_total_flops() / 1e12,
            "vae_decode_tflop": vae_flops.get_total_flops() / 1e12}


if __name__ == "__main__":
    print(count())
