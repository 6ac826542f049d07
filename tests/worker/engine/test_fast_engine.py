"""The fast engine's building blocks on the CPU (tiny profile, no compile): the LCM-LoRA baked into
the weights with no PEFT wrapper left, fused QKV, per-row scales, and the switch to quality mode
give the images the plain engine gives, within float tolerance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shared.settings import Settings
from tests.pipeline_inputs import face_embedding, inputs, pixels
from worker.engine.baked_lora import tuner_layers
from worker.engine.devices import DevicePolicy
from worker.engine.fast_mode import FastOptions
from worker.engine.generation import generate_images


@pytest.fixture(scope="module")
def fast_engine(fast_tiny_engine):
    return fast_tiny_engine


def _mean_diff(a, b) -> float:
    return float(np.abs(pixels(a) - pixels(b)).mean())


def _close(a, b) -> bool:
    """Equal up to float rounding, which this tiny random-weight model amplifies to a few levels
    on a few pixels (a batch row vs the same image alone differs as much on the plain path)."""
    diff = np.abs(pixels(a) - pixels(b))
    return float(diff.mean()) < 0.75 and int(diff.max()) <= 12


def test_no_peft_wrapper_left_in_the_forward_path(fast_engine):
    assert tuner_layers(fast_engine.pipe.unet) == []
    assert tuner_layers(fast_engine.pipe.controlnet) == []
    seen = []
    hooks = [m.register_forward_hook(lambda mod, _a, _o: seen.append(type(mod).__module__))
             for m in fast_engine.pipe.unet.modules()]
    try:
        generate_images(fast_engine, inputs(num_images=1, steps=1))
    finally:
        for hook in hooks:
            hook.remove()
    assert seen and not [name for name in seen if name.startswith("peft")]


def test_fast_mode_gives_the_plain_engines_images(tiny_engine, fast_engine):
    plain = generate_images(tiny_engine, inputs()).images
    fast = generate_images(fast_engine, inputs()).images
    assert len(fast) == len(plain) == 2
    assert all(_close(a, b) for a, b in zip(plain, fast))


def test_quality_mode_and_back_match_the_plain_engine(tiny_engine, fast_engine):
    quality = {"num_images": 1, "mode": "quality", "steps": 2, "guidance": 5.0}
    plain_quality = generate_images(tiny_engine, inputs(**quality)).images[0]
    fast_quality = generate_images(fast_engine, inputs(**quality)).images[0]
    assert not fast_engine.modes.fused
    assert _close(plain_quality, fast_quality)
    base = {id(w.weight): w.base for w in fast_engine.modes.baked.weights}
    assert all(torch.equal(w.weight.detach(), base[id(w.weight)]) for w in fast_engine.modes.baked.weights)
    plain_fast = generate_images(tiny_engine, inputs(num_images=1)).images[0]
    fast_again = generate_images(fast_engine, inputs(num_images=1)).images[0]
    assert fast_engine.modes.fused and _close(plain_fast, fast_again)
    # the LoRA matters: quality and fast images of one seed differ
    assert _mean_diff(fast_quality, fast_again) > 2


def test_fused_qkv_is_used_and_shares_the_lora_updates(fast_engine):
    from diffusers.models.attention_processor import FusedAttnProcessor2_0

    attn = fast_engine.pipe.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1
    assert isinstance(attn.processor, FusedAttnProcessor2_0)
    assert attn.to_q.weight.data_ptr() == attn.to_qkv.weight.data_ptr()
    ip_attn = fast_engine.pipe.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn2
    assert hasattr(ip_attn.processor, "to_v_ip")  # the IP-Adapter processor is kept


def test_scales_still_apply_per_call(tiny_engine, fast_engine):
    kw = {"num_images": 1, "ip_adapter_scale": 0.3, "controlnet_conditioning_scale": 0.5}
    plain = generate_images(tiny_engine, inputs(**kw)).images[0]
    fast = generate_images(fast_engine, inputs(**kw)).images[0]
    assert _close(plain, fast)
    default = generate_images(fast_engine, inputs(num_images=1)).images[0]
    off = generate_images(fast_engine, inputs(num_images=1, ip_adapter_scale=0.0,
                                              controlnet_conditioning_scale=0.0)).images[0]
    assert _mean_diff(off, default) > 1.5
    other_face = generate_images(fast_engine, inputs(num_images=1, face_embedding=face_embedding(3))).images[0]
    assert _mean_diff(default, other_face) > 0.9


def test_fast_options_follow_the_setting_and_the_device():
    cpu = DevicePolicy("cpu", "float32", False, reason="test")
    cuda = DevicePolicy("cuda", "float16", False, reason="test")
    offload = DevicePolicy("cuda", "float16", True, reason="test")
    auto = Settings(_env_file=None)
    compiling = Settings(_env_file=None, engine_compile=True)
    assert FastOptions.decide(auto, cpu, "m") is None
    assert FastOptions.decide(auto, cuda, "m").compile_mode is None
    assert FastOptions.decide(compiling, cuda, "m").compile_mode == "reduce-overhead"
    assert FastOptions.decide(compiling, offload, "m").compile_mode is None
    assert FastOptions.decide(Settings(_env_file=None, engine_fast="on", engine_compile=True), cpu, "m").compile_mode is None
    assert FastOptions.decide(Settings(_env_file=None, engine_fast="off"), cuda, "m") is None
    on_cpu = FastOptions.decide(Settings(_env_file=None, engine_fast="on"), cpu, "m")
    assert on_cpu is not None and on_cpu.compile_mode is None
    assert str(FastOptions.decide(auto, cuda, "models").cache_dir) == "models/.compile-cache"
