"""The released ip-adapter.bin layout goes through diffusers' own load_ip_adapter, and the wiring:
IdentityNet's cross-attention sees the 16 face tokens while the UNet sees text + face tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.pipeline_inputs import face_embedding, inputs
from worker.engine.generation import generate_images
from worker.models import layout
from worker.tiny.ip_adapter_layout import ResamplerShape, cross_attention_hidden_sizes


def _released_resampler_keys(depth: int) -> set[str]:
    keys = {"latents", "proj_in.weight", "proj_in.bias", "proj_out.weight", "proj_out.bias",
            "norm_out.weight", "norm_out.bias"}
    for i in range(depth):
        for n in ("norm1", "norm2"):
            keys |= {f"layers.{i}.0.{n}.weight", f"layers.{i}.0.{n}.bias"}
        keys |= {f"layers.{i}.0.to_q.weight", f"layers.{i}.0.to_kv.weight", f"layers.{i}.0.to_out.weight",
                 f"layers.{i}.1.0.weight", f"layers.{i}.1.0.bias", f"layers.{i}.1.1.weight", f"layers.{i}.1.3.weight"}
    return keys


@pytest.fixture(scope="module")
def released_state(tiny_model_dir):
    return torch.load(layout.part(tiny_model_dir, layout.IP_ADAPTER_FILE), weights_only=True)


def test_file_has_the_released_layout(released_state, tiny_engine):
    assert set(released_state) == {"image_proj", "ip_adapter"}
    assert set(released_state["image_proj"]) == _released_resampler_keys(4)
    proj = released_state["image_proj"]
    assert proj["latents"].shape[1] == 16 and proj["proj_in.weight"].shape[1] == 512
    assert proj["proj_out.weight"].shape[0] == tiny_engine.pipe.unet.config.cross_attention_dim
    n_cross = len(cross_attention_hidden_sizes(tiny_engine.pipe.unet))
    expected = {f"{k}.to_{p}_ip.weight" for k in range(1, 2 * n_cross, 2) for p in "kv"}
    assert set(released_state["ip_adapter"]) == expected


def test_full_size_build_numbers_1_to_139_and_matches_the_released_identitynet():
    from diffusers import ControlNetModel, UNet2DConditionModel

    from bench.full_size import SDXL_UNET

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SDXL_UNET)
        identitynet = ControlNetModel.from_unet(unet, load_weights_from_unet=False)
    sizes = cross_attention_hidden_sizes(unet)
    assert len(sizes) == 70  # keys 1, 3, ..., 139
    assert 2 * len(sizes) - 1 == 139
    cfg = identitynet.config
    assert (cfg.cross_attention_dim, cfg.addition_embed_type) == (2048, "text_time")
    assert list(cfg.block_out_channels) == [320, 640, 1280]
    assert list(cfg.transformer_layers_per_block) == [1, 2, 10]


def test_processors_and_projection_hold_the_file_weights(released_state, tiny_engine):
    unet = tiny_engine.pipe.unet
    ip = released_state["ip_adapter"]
    cross = [p for name, p in unet.attn_processors.items()
             if name.endswith("attn2.processor") and not name.startswith("encoder_hid_proj")]
    assert cross and all(type(p).__name__.startswith("IPAdapterAttnProcessor") for p in cross)
    for i, proc in enumerate(cross):
        k = 2 * i + 1
        assert torch.equal(proc.to_k_ip[0].weight, ip[f"{k}.to_k_ip.weight"])
        assert torch.equal(proc.to_v_ip[0].weight, ip[f"{k}.to_v_ip.weight"])
    src = released_state["image_proj"]
    proj = unet.encoder_hid_proj.image_projection_layers[0]
    assert type(proj).__name__ == "IPAdapterPlusImageProjection"
    assert torch.equal(proj.latents, src["latents"])
    assert torch.equal(proj.proj_in.weight, src["proj_in.weight"])
    assert torch.equal(proj.norm_out.bias, src["norm_out.bias"])
    for i, layer in enumerate(proj.layers):
        to_k, to_v = src[f"layers.{i}.0.to_kv.weight"].chunk(2)
        assert torch.equal(layer.attn.to_k.weight, to_k) and torch.equal(layer.attn.to_v.weight, to_v)
        assert torch.equal(layer.attn.to_q.weight, src[f"layers.{i}.0.to_q.weight"])
        assert torch.equal(layer.attn.to_out[0].weight, src[f"layers.{i}.0.to_out.weight"])
        assert torch.equal(layer.ln0.weight, src[f"layers.{i}.0.norm1.weight"])
        assert torch.equal(layer.ln1.weight, src[f"layers.{i}.0.norm2.weight"])
        assert torch.equal(layer.ff[1].net[2].weight, src[f"layers.{i}.1.3.weight"])
    assert ResamplerShape.released().output_dim == 2048


def _capture_cross_attention(module, store: list):
    def hook(_m, _args, kwargs):
        store.append(kwargs["encoder_hidden_states"])
    return module.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("mode,guidance", [("fast", 0.0), ("quality", 5.0)])
def test_identitynet_sees_face_tokens_and_unet_sees_text_plus_face(tiny_engine, mode, guidance):
    pipe = tiny_engine.pipe
    net_attn = pipe.controlnet.down_blocks[1].attentions[0].transformer_blocks[0].attn2
    unet_attn = pipe.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn2
    seen_net, seen_unet = [], []
    handles = [_capture_cross_attention(net_attn, seen_net), _capture_cross_attention(unet_attn, seen_unet)]
    try:
        generate_images(tiny_engine, inputs(num_images=2, steps=1, mode=mode, guidance=guidance))
    finally:
        for h in handles:
            h.remove()
    batch = 2 * (2 if guidance > 1 else 1)
    dim = pipe.unet.config.cross_attention_dim
    positive = pipe.face_tokens(torch.from_numpy(face_embedding())[None])
    expected = positive.repeat(2, 1, 1)
    if guidance > 1:
        negative = pipe.face_tokens(torch.zeros(1, 512)).repeat(2, 1, 1)
        expected = torch.cat([negative, expected])
    net_states = seen_net[0]
    assert net_states.shape == (batch, 16, dim)
    torch.testing.assert_close(net_states, expected)
    text, (face,) = seen_unet[0]
    assert text.shape[0] == batch and text.shape[1] == 77 and text.shape[2] == dim
    assert face.shape == (batch, 1, 16, dim)
    torch.testing.assert_close(face[:, 0], expected)
    assert not np.allclose(text[:, :16].numpy(), expected.numpy())
