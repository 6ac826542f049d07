"""The key layout of InstantID's released ``ip-adapter.bin``, written for any UNet.

The tiny profile, the full-size bench and the round-trip test all build their ``ip-adapter.bin``
here, so every one of them exercises diffusers' own converter (``load_ip_adapter``) on exactly the
layout the released file has:

* ``image_proj``: IP-Adapter-Plus Resampler. ``latents`` [1, queries, dim], ``proj_in`` (512 -> dim),
  ``proj_out`` (dim -> cross_attention_dim), ``norm_out``, and per layer i
  ``layers.i.0.{norm1,norm2,to_q,to_kv,to_out}`` (PerceiverAttention, to_kv = k and v stacked) and
  ``layers.i.1.{0,1,3}`` (LayerNorm, Linear up, GELU, Linear down).
* ``ip_adapter``: ``"{k}.to_k_ip.weight"`` / ``"{k}.to_v_ip.weight"`` for the k-th cross-attention
  processor, k = 1, 3, 5, ... in ``unet.attn_processors`` order (1..139 for SDXL).

Example::

    sd = ip_adapter_state_dict(unet, ResamplerShape.released(), seed=0)
    torch.save(sd, "instantid/ip-adapter.bin")
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ResamplerShape:
    dim: int
    depth: int
    heads: int
    dim_head: int
    num_queries: int
    embedding_dim: int
    output_dim: int
    ff_mult: int

    @classmethod
    def released(cls, output_dim: int = 2048) -> "ResamplerShape":
        return cls(dim=1280, depth=4, heads=20, dim_head=64, num_queries=16, embedding_dim=512,
                   output_dim=output_dim, ff_mult=4)

    @classmethod
    def tiny(cls, output_dim: int) -> "ResamplerShape":
        # dim_head stays 64: diffusers infers heads as to_q rows // 64.
        return cls(dim=128, depth=4, heads=2, dim_head=64, num_queries=16, embedding_dim=512,
                   output_dim=output_dim, ff_mult=4)


def _weight(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen) * (1.0 / shape[-1] ** 0.5)


def _norm(gen: torch.Generator, prefix: str, n: int) -> dict[str, torch.Tensor]:
    return {f"{prefix}.weight": 1.0 + 0.05 * torch.randn(n, generator=gen),
            f"{prefix}.bias": 0.05 * torch.randn(n, generator=gen)}


def resampler_state_dict(shape: ResamplerShape, gen: torch.Generator) -> dict[str, torch.Tensor]:
    d, inner, hidden = shape.dim, shape.heads * shape.dim_head, shape.dim * shape.ff_mult
    sd = {
        "latents": torch.randn(1, shape.num_queries, d, generator=gen) / d**0.5,
        "proj_in.weight": _weight(gen, d, shape.embedding_dim),
        "proj_in.bias": 0.02 * torch.randn(d, generator=gen),
        "proj_out.weight": _weight(gen, shape.output_dim, d),
        "proj_out.bias": 0.02 * torch.randn(shape.output_dim, generator=gen),
        **_norm(gen, "norm_out", shape.output_dim),
    }
    for i in range(shape.depth):
        attn, ff = f"layers.{i}.0", f"layers.{i}.1"
        sd.update(_norm(gen, f"{attn}.norm1", d))
        sd.update(_norm(gen, f"{attn}.norm2", d))
        sd[f"{attn}.to_q.weight"] = _weight(gen, inner, d)
        sd[f"{attn}.to_kv.weight"] = _weight(gen, 2 * inner, d)
        sd[f"{attn}.to_out.weight"] = _weight(gen, d, inner)
        sd.update(_norm(gen, f"{ff}.0", d))
        sd[f"{ff}.1.weight"] = _weight(gen, hidden, d)
        sd[f"{ff}.3.weight"] = _weight(gen, d, hidden)
    return sd


def cross_attention_hidden_sizes(unet) -> list[int]:
    """Hidden size of each cross-attention (attn2) processor, in the order diffusers numbers them."""
    blocks = list(unet.config.block_out_channels)
    sizes = []
    for name in unet.attn_processors:
        # After loading, the Resampler's own attention shows up here too; it is not numbered.
        if name.endswith("attn1.processor") or not name.startswith(("down_blocks", "mid_block", "up_blocks")):
            continue
        if name.startswith("mid_block"):
            sizes.append(blocks[-1])
        elif name.startswith("up_blocks"):
            sizes.append(list(reversed(blocks))[int(name[len("up_blocks.")])])
        else:
            sizes.append(blocks[int(name[len("down_blocks.")])])
    return sizes


def ip_attention_state_dict(unet, gen: torch.Generator) -> dict[str, torch.Tensor]:
    cross = unet.config.cross_attention_dim
    sd = {}
    for i, hidden in enumerate(cross_attention_hidden_sizes(unet)):
        k = 2 * i + 1
        sd[f"{k}.to_k_ip.weight"] = _weight(gen, hidden, cross)
        sd[f"{k}.to_v_ip.weight"] = _weight(gen, hidden, cross)
    return sd


def ip_adapter_state_dict(unet, shape: ResamplerShape, seed: int = 0,
                          dtype: torch.dtype = torch.float32) -> dict[str, dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    sd = {"image_proj": resampler_state_dict(shape, gen), "ip_adapter": ip_attention_state_dict(unet, gen)}
    return {part: {k: v.to(dtype) for k, v in tensors.items()} for part, tensors in sd.items()}
