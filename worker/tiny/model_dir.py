"""The tiny profile: the released model folder's exact layout, filled with small seeded random
components of the same classes, built offline in a few seconds.

Everything is written with ``save_pretrained`` / the released file formats, so the very same
loading code (worker.engine.loading) that loads the real weights loads this folder. The face
models are not here: the tiny profile analyses faces with dlib's real, trained models, which ship
in a wheel (worker.face.dlib_analyzer).

Example::

    model_dir = build_tiny_model_dir(Path(".cache/tiny-models"), seed=0)
    load_engine(model_dir, DevicePolicy.decide(settings))
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from worker.models import layout

log = logging.getLogger(__name__)

# Bump when anything below changes what is written: an older folder is then rebuilt.
BUILD_VERSION = "tiny-9"  # tiny-8: no hand-built face models (dlib does faces); tiny-9: a second base
MARKER = ".tiny-build.json"
# the second base checkpoint the tiny profile ships, so that tests switch bases for real
SECOND_BASE = "tiny-alt"

# Tiny text encoders: hidden 32 each -> UNet cross_attention_dim 64 (SDXL: 768 + 1280 = 2048).
TEXT_HIDDEN = 32
TEXT2_PROJECTION = 32
TIME_EMBED_DIM = 8
CROSS_ATTENTION_DIM = 2 * TEXT_HIDDEN


def expected_files(model_dir: Path) -> list[Path]:
    """Files whose presence means a tiny build finished (the marker is written last)."""
    rel = [
        f"{layout.SDXL_DIR}/model_index.json",
        f"{layout.SDXL_DIR}/unet/config.json",
        f"{layout.SDXL_DIR}/tokenizer_2/vocab.json",
        f"{layout.VAE_DIR}/config.json",
        f"{layout.CONTROLNET_DIR}/config.json",
        f"{layout.CONTROLNET_DIR}/diffusion_pytorch_model.safetensors",
        layout.IP_ADAPTER_FILE,
        layout.LCM_LORA_FILE,
        "bases/bases.json",
    ]
    return [layout.part(model_dir, r) for r in rel]


def is_complete(model_dir: Path, seed: int) -> bool:
    marker = Path(model_dir) / MARKER
    if not marker.is_file() or not all(p.is_file() for p in expected_files(model_dir)):
        return False
    return json.loads(marker.read_text()) == {"version": BUILD_VERSION, "seed": seed}


def _unet(seed: int):
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    # SDXL's shape (no attention at full latent size, attention from the second level on) with few
    # channels: a 4 x 768x1024 step costs ~1.1 CPU-seconds (the former two levels of 32/64 channels
    # with attention at half size: ~5); bench/README.md has the numbers
    return UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, norm_num_groups=8,
        block_out_channels=(8, 16, 32), attention_head_dim=(1, 2, 4), transformer_layers_per_block=(1, 1, 2),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        use_linear_projection=True, cross_attention_dim=CROSS_ATTENTION_DIM,
        addition_embed_type="text_time", addition_time_embed_dim=TIME_EMBED_DIM,
        projection_class_embeddings_input_dim=TEXT2_PROJECTION + 6 * TIME_EMBED_DIM,
    )


def _identitynet(unet, seed: int):
    """IdentityNet built to match the UNet. Its zero-convolutions get small random weights: the
    released IdentityNet is trained, so a tiny one whose residuals are all zero would hide bugs."""
    import torch
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    # the condition embedding runs at full pixel size on every step: few channels keep it cheap
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(4, 4, 8, 16))
    with torch.no_grad():
        for conv in [*net.controlnet_down_blocks, net.controlnet_mid_block, net.controlnet_cond_embedding.conv_out]:
            conv.weight.normal_(0.0, 0.05)
            conv.bias.normal_(0.0, 0.01)
    return net


def _vae(seed: int):
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    # Four levels: an 8x latent scale like SDXL's VAE. force_upcast False like the fp16-fix VAE. No
    # mid-block attention: over every latent pixel (12,288 at 768x1024) it cost more than the rest.
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=4,
        block_out_channels=(4, 8, 8, 16), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, sample_size=128, scaling_factor=0.13025,
        force_upcast=False, mid_block_add_attention=False,
    )


def _text_encoders(seed: int, vocab_size: int, bos: int, eos: int):
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    def config(**extra) -> CLIPTextConfig:
        return CLIPTextConfig(vocab_size=vocab_size, hidden_size=TEXT_HIDDEN, intermediate_size=64,
                              num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
                              hidden_act="gelu", bos_token_id=bos, eos_token_id=eos, pad_token_id=0, **extra)

    torch.manual_seed(seed)
    one = CLIPTextModel(config())
    torch.manual_seed(seed + 1)
    two = CLIPTextModelWithProjection(config(projection_dim=TEXT2_PROJECTION))
    return one, two


def _scheduler():
    from diffusers import EulerDiscreteScheduler

    # SDXL base's scheduler config.
    return EulerDiscreteScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type="epsilon", steps_offset=1, timestep_spacing="leading", interpolation_type="linear",
        use_karras_sigmas=False,
    )


def _write_tokenizer(folder: Path, pad_token: str) -> None:
    """Released SDXL tokenizer folders hold vocab.json + merges.txt + tokenizer_config.json."""
    from worker.tiny.tokenizer import END, START, write_clip_tokenizer_files

    if folder.exists():
        shutil.rmtree(folder)
    write_clip_tokenizer_files(folder)
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "bos_token": START,
              "eos_token": END, "unk_token": END, "pad_token": pad_token, "do_lower_case": True}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def _write_sdxl(model_dir: Path, unet, seed: int) -> None:
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTokenizer

    from worker.tiny.tokenizer import END, START, clip_vocab

    vocab, merges = clip_vocab()
    tok_dir = layout.part(model_dir, f"{layout.SDXL_DIR}/tokenizer")
    tok2_dir = layout.part(model_dir, f"{layout.SDXL_DIR}/tokenizer_2")
    _write_tokenizer(tok_dir, END)
    _write_tokenizer(tok2_dir, "!")
    te1, te2 = _text_encoders(seed + 10, len(vocab), vocab[START], vocab[END])
    pipe = StableDiffusionXLPipeline(
        vae=_vae(seed + 20), text_encoder=te1, text_encoder_2=te2,
        tokenizer=CLIPTokenizer.from_pretrained(tok_dir), tokenizer_2=CLIPTokenizer.from_pretrained(tok2_dir),
        unet=unet, scheduler=_scheduler(),
    )
    pipe.save_pretrained(layout.part(model_dir, layout.SDXL_DIR), safe_serialization=True)
    # save_pretrained writes tokenizer.json; put back the released vocab.json/merges.txt layout.
    _write_tokenizer(tok_dir, END)
    _write_tokenizer(tok2_dir, "!")


def _write_instantid(model_dir: Path, unet, seed: int) -> None:
    import torch

    from worker.tiny.ip_adapter_layout import ResamplerShape, ip_adapter_state_dict

    _identitynet(unet, seed + 30).save_pretrained(layout.part(model_dir, layout.CONTROLNET_DIR),
                                                   safe_serialization=True)
    state = ip_adapter_state_dict(unet, ResamplerShape.tiny(unet.config.cross_attention_dim), seed=seed + 40)
    torch.save(state, layout.part(model_dir, layout.IP_ADAPTER_FILE))


def _write_lcm_lora(model_dir: Path, unet, seed: int) -> None:
    from safetensors.torch import save_file

    from worker.tiny.lcm_lora import lcm_lora_state_dict

    path = layout.part(model_dir, layout.LCM_LORA_FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(lcm_lora_state_dict(unet, seed=seed + 50), str(path))


def _add_second_base(model_dir: Path, seed: int) -> None:
    """Another tiny SDXL base (same classes and shapes, other random weights), added the way an
    operator adds a fine-tune: written as a diffusers folder, then ``add_base``."""
    from worker.models.add_base import add_base
    from worker.tiny.tokenizer import END, START, clip_vocab

    vocab, _ = clip_vocab()
    source = model_dir / f".{SECOND_BASE}-source"
    shutil.rmtree(source, ignore_errors=True)
    te1, te2 = _text_encoders(seed + 110, len(vocab), vocab[START], vocab[END])
    for name, module in (("unet", _unet(seed + 100)), ("vae", _vae(seed + 120)), ("text_encoder", te1),
                         ("text_encoder_2", te2)):
        module.save_pretrained(source / name, safe_serialization=True)
    add_base(model_dir, source, SECOND_BASE)
    shutil.rmtree(source)   # the base's files are links or copies of these


def add_tiny_pose_controlnet(model_dir: Path, seed: int = 0) -> Path:
    """Add the optional pose ControlNet to a built tiny folder: a ControlNet of the tiny UNet's
    shape with random weights, where ``download --with pose`` puts the real one; returns its folder."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(layout.part(model_dir, layout.SDXL_DIR) / "unet")
    folder = layout.part(model_dir, layout.POSE_CONTROLNET_DIR)
    _identitynet(unet, seed + 60).save_pretrained(folder, safe_serialization=True)
    return folder


def build_tiny_model_dir(model_dir: Path, seed: int = 0) -> Path:
    """Write (or reuse) the tiny profile in ``model_dir``; returns ``model_dir``."""
    model_dir = Path(model_dir)
    if is_complete(model_dir, seed):
        return model_dir
    log.info("building the tiny model profile in %s (seed %d)", model_dir, seed)
    (model_dir / MARKER).unlink(missing_ok=True)
    shutil.rmtree(model_dir / "bases", ignore_errors=True)   # a build artifact: rebuilt with the rest
    model_dir.mkdir(parents=True, exist_ok=True)
    unet = _unet(seed)
    _write_sdxl(model_dir, unet, seed)
    _vae(seed + 21).save_pretrained(layout.part(model_dir, layout.VAE_DIR), safe_serialization=True)
    _write_instantid(model_dir, unet, seed)
    _write_lcm_lora(model_dir, unet, seed)
    _add_second_base(model_dir, seed)
    (model_dir / MARKER).write_text(json.dumps({"version": BUILD_VERSION, "seed": seed}))
    return model_dir
