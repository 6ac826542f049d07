"""Architecture-exact SDXL base + IdentityNet + InstantID IP-Adapter + LCM-LoRA with random fp16
weights, assembled in GPU memory (the released weights cannot be fetched where CI runs). The
timings it gives are the released models' timings: speed depends on shapes, not on values.

Example::

    engine = build_full_size_engine(DevicePolicy.decide(settings))   # needs CUDA
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from worker.engine.devices import DevicePolicy

# stabilityai/stable-diffusion-xl-base-1.0 unet/config.json, the shapes that matter.
SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, norm_num_groups=32,
    block_out_channels=(320, 640, 1280), attention_head_dim=(5, 10, 20), transformer_layers_per_block=(1, 2, 10),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    use_linear_projection=True, cross_attention_dim=2048, addition_embed_type="text_time",
    addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
)
SDXL_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
    block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, sample_size=1024, scaling_factor=0.13025, force_upcast=False,
)
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              hidden_act="quick_gelu")
CLIP_BIG_G = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                  hidden_act="gelu", projection_dim=1280)
LCM_LORA_RANK = 64


def _text_encoders(vocab_size: int, bos: int, eos: int, one: dict, two: dict):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    common = dict(vocab_size=max(vocab_size, 49408), max_position_embeddings=77, bos_token_id=bos,
                  eos_token_id=eos, pad_token_id=0)
    return (CLIPTextModel(CLIPTextConfig(**common, **one)),
            CLIPTextModelWithProjection(CLIPTextConfig(**common, **two)))


def _tokenizers():
    from transformers import CLIPTokenizer

    from worker.tiny.model_dir import _write_tokenizer
    from worker.tiny.tokenizer import END

    folder = Path(tempfile.mkdtemp(prefix="idbody-tok-"))
    _write_tokenizer(folder / "one", END)
    _write_tokenizer(folder / "two", "!")
    return CLIPTokenizer.from_pretrained(folder / "one"), CLIPTokenizer.from_pretrained(folder / "two")


def build_full_size_engine(policy: DevicePolicy, seed: int = 0):
    """Random-weight SDXL + IdentityNet + IP-Adapter (released Resampler) + rank-64 LCM-LoRA,
    through the same InstantIDPipeline, diffusers loaders and engine tail as the real weights."""
    if policy.device != "cuda":
        raise RuntimeError("the full-size bench needs a CUDA GPU")
    return assemble_engine(policy, seed)


def assemble_engine(policy: DevicePolicy, seed: int = 0, unet_config: dict | None = None,
                    vae_config: dict | None = None, text_configs: tuple[dict, dict] | None = None):
    """Build the components on ``policy.device`` from the given configs (default: SDXL's)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        ControlNetModel,
        EulerDiscreteScheduler,
        UNet2DConditionModel,
    )

    from worker.engine.instantid_pipeline import InstantIDPipeline
    from worker.engine.lcm_mode import LCM_ADAPTER
    from worker.engine.loading import finish_engine
    from worker.tiny.ip_adapter_layout import ResamplerShape, ip_adapter_state_dict
    from worker.tiny.lcm_lora import lcm_lora_state_dict
    from worker.tiny.model_dir import _scheduler

    torch.manual_seed(seed)
    tok1, tok2 = _tokenizers()
    vocab = tok1.get_vocab()
    with torch.device(policy.device):
        unet = UNet2DConditionModel(**(unet_config or SDXL_UNET))
        controlnet = ControlNetModel.from_unet(unet)  # IdentityNet: the released config is the UNet's
        vae = AutoencoderKL(**(vae_config or SDXL_VAE))
        te1, te2 = _text_encoders(len(vocab), vocab["<|startoftext|>"], vocab["<|endoftext|>"],
                                  *(text_configs or (CLIP_L, CLIP_BIG_G)))
    scheduler: EulerDiscreteScheduler = _scheduler()
    ip_state = ip_adapter_state_dict(unet, ResamplerShape.released(unet.config.cross_attention_dim), seed=seed)
    lora_state = lcm_lora_state_dict(unet, rank=LCM_LORA_RANK, seed=seed)
    for module in (unet, controlnet, vae, te1, te2):
        module.to(policy.dtype)
    pipe = InstantIDPipeline(vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tok1, tokenizer_2=tok2,
                             unet=unet, controlnet=controlnet, scheduler=scheduler)
    pipe.load_ip_adapter(ip_state, subfolder="", weight_name="ip-adapter.bin", image_encoder_folder=None)
    pipe.load_lora_weights(lora_state, adapter_name=LCM_ADAPTER)
    return finish_engine(pipe, "instantid", scheduler.config, True, policy,
                         parts=["sdxl(random)", "identitynet(random)", "ip-adapter(random)", "lcm-lora(random)"])
