"""Write a diffusers SDXL folder as one single-file checkpoint in the original (Stability/ldm) key
layout, the format fine-tunes are shared in: what ``idbody models add-base`` converts back with
diffusers' ``from_single_file``. Test-only: it covers the shapes the tiny profile builds (no VAE
mid-block attention) and refuses anything else rather than write a wrong file.

Example::

    write_single_file(tiny_model_dir / "sdxl", tmp_path / "tiny.safetensors")
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
               "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
            "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
            "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
VAE_TOP = {"encoder.conv_norm_out": "encoder.norm_out", "decoder.conv_norm_out": "decoder.norm_out"}
OPEN_CLIP_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "self_attn.out_proj": "attn.out_proj",
                   "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    (file,) = [p for p in folder.glob("*.safetensors") if len(p.name.split(".")) == 2]
    return load_file(str(file))


def _resnet(rest: str) -> str:
    layer, _, param = rest.partition(".")
    return f"{UNET_RESNET[layer]}.{param}"


def unet_keys(state: dict[str, torch.Tensor], layers_per_block: int) -> dict[str, torch.Tensor]:
    per_block = layers_per_block + 1
    out = {}
    for key, value in state.items():
        module, _, param = key.rpartition(".")
        if module in UNET_TOP:
            out[f"{UNET_TOP[module]}.{param}"] = value
            continue
        if m := re.match(r"(down|up)_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
            down, block, kind, layer, rest = m[1] == "down", int(m[2]), m[3], int(m[4]), m[5]
            # ldm counts the blocks' layers in one row: input_blocks.0 is conv_in, up blocks start at 0
            index, blocks = int(down) + block * per_block + layer, "input_blocks" if down else "output_blocks"
            out[f"{blocks}.{index}.0.{_resnet(rest)}" if kind == "resnets" else f"{blocks}.{index}.1.{rest}"] = value
        elif m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
            out[f"input_blocks.{1 + int(m[1]) * per_block + layers_per_block}.0.op.{m[2]}"] = value
        elif m := re.match(r"mid_block\.resnets\.(\d+)\.(.+)", key):
            out[f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"] = value
        elif m := re.match(r"mid_block\.attentions\.0\.(.+)", key):
            out[f"middle_block.1.{m[1]}"] = value
        elif m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            block = int(m[1])
            slot = 2 if any(k.startswith(f"up_blocks.{block}.attentions.") for k in state) else 1
            out[f"output_blocks.{block * per_block + layers_per_block}.{slot}.conv.{m[2]}"] = value
        else:
            raise ValueError(f"no single-file place for UNet tensor {key}")
    return out


def vae_keys(state: dict[str, torch.Tensor], blocks: int) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        module, _, param = key.rpartition(".")
        key = key.replace("conv_shortcut", "nin_shortcut")
        if module in VAE_TOP:
            out[f"{VAE_TOP[module]}.{param}"] = value
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            out[f"encoder.down.{m[1]}.block.{m[2]}.{m[3]}"] = value
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.+)", key):
            out[f"encoder.down.{m[1]}.downsample.{m[2]}"] = value
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            out[f"decoder.up.{blocks - 1 - int(m[1])}.block.{m[2]}.{m[3]}"] = value
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.+)", key):
            out[f"decoder.up.{blocks - 1 - int(m[1])}.upsample.{m[2]}"] = value
        elif m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
            out[f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}"] = value
        elif "attentions" in key:
            raise ValueError(f"VAE attention is not written by this test helper: {key}")
        else:
            out[key] = value   # conv_in, conv_out, quant_conv, post_quant_conv keep their names
    return out


def clip_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CLIP ViT-L keeps the Hugging Face names, under ``text_model.`` as released files have them
    (transformers 5 saves CLIPTextModel's without it)."""
    return {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in state.items()}


def open_clip_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = clip_keys({k: v for k, v in state.items() if k != "text_projection.weight"}) | {
        "text_projection.weight": state["text_projection.weight"]}
    out = {"text_projection": state["text_projection.weight"].T.contiguous(),
           "positional_embedding": state["text_model.embeddings.position_embedding.weight"],
           "token_embedding.weight": state["text_model.embeddings.token_embedding.weight"],
           "ln_final.weight": state["text_model.final_layer_norm.weight"],
           "ln_final.bias": state["text_model.final_layer_norm.bias"]}
    layers = {int(m[1]) for k in state if (m := re.match(r"text_model\.encoder\.layers\.(\d+)\.", k))}
    for n in sorted(layers):
        prefix, block = f"text_model.encoder.layers.{n}.", f"transformer.resblocks.{n}."
        for part in ("weight", "bias"):
            out[f"{block}attn.in_proj_{part}"] = torch.cat(
                [state[f"{prefix}self_attn.{p}_proj.{part}"] for p in ("q", "k", "v")])
            for theirs, ours in OPEN_CLIP_LAYER.items():
                out[f"{block}{ours}.{part}"] = state[f"{prefix}{theirs}.{part}"]
    return out


def write_single_file(sdxl: Path, path: Path) -> Path:
    """One .safetensors with the UNet, VAE and both text encoders of the diffusers folder ``sdxl``."""
    unet_config = json.loads((sdxl / "unet" / "config.json").read_text())
    vae_config = json.loads((sdxl / "vae" / "config.json").read_text())
    families = {
        "model.diffusion_model.": unet_keys(_weights(sdxl / "unet"), unet_config["layers_per_block"]),
        "first_stage_model.": vae_keys(_weights(sdxl / "vae"), len(vae_config["up_block_types"])),
        "conditioner.embedders.0.transformer.": clip_keys(_weights(sdxl / "text_encoder")),
        "conditioner.embedders.1.model.": open_clip_keys(_weights(sdxl / "text_encoder_2")),
    }
    save_file({prefix + k: v.contiguous() for prefix, part in families.items() for k, v in part.items()}, str(path))
    return path
