"""One loading path from a model folder: the tiny builder, the LCM-LoRA mode switch, the SDXL
fallback and models_missing, and the device policy."""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import CLIPTokenizer

from shared.errors import ErrorCode, IdentityBodyError
from shared.settings import Settings
from tests.pipeline_inputs import inputs
from worker.engine.devices import DevicePolicy
from worker.engine.generation import generate_images
from worker.engine.lcm_mode import LCM_ADAPTER
from worker.engine.loading import FALLBACK_NOTE, load_engine
from worker.engine.prompts import build_prompt
from worker.models import layout
from worker.tiny.model_dir import MARKER, build_tiny_model_dir, is_complete

CPU = DevicePolicy("cpu", "float32", False, reason="tests")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _copy_without(src: Path, dst: Path, *drop: str) -> Path:
    shutil.copytree(src, dst)
    for rel in drop:
        target = dst / rel
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    return dst


def test_tiny_build_is_deterministic_and_reused(tiny_model_dir, tmp_path):
    assert is_complete(tiny_model_dir, seed=0)
    unet_file = layout.part(tiny_model_dir, f"{layout.SDXL_DIR}/unet/diffusion_pytorch_model.safetensors")
    before = unet_file.stat().st_mtime_ns
    build_tiny_model_dir(tiny_model_dir)
    assert unet_file.stat().st_mtime_ns == before  # complete folder, same version: not rebuilt
    fresh = build_tiny_model_dir(tmp_path / "again")
    for rel in (f"{layout.SDXL_DIR}/unet/diffusion_pytorch_model.safetensors",
                f"{layout.CONTROLNET_DIR}/diffusion_pytorch_model.safetensors", layout.LCM_LORA_FILE):
        assert _sha(tiny_model_dir / rel) == _sha(fresh / rel)
    assert not is_complete(fresh, seed=1)
    (fresh / MARKER).write_text('{"version": "old", "seed": 0}')
    assert not is_complete(fresh, seed=0)


def test_tokenizers_use_the_released_file_layout(tiny_model_dir):
    for name in ("tokenizer", "tokenizer_2"):
        folder = layout.part(tiny_model_dir, f"{layout.SDXL_DIR}/{name}")
        assert {p.name for p in folder.iterdir()} == {"vocab.json", "merges.txt", "tokenizer_config.json"}
    tokenizer = CLIPTokenizer.from_pretrained(layout.part(tiny_model_dir, f"{layout.SDXL_DIR}/tokenizer"))
    prompt = build_prompt({"body_type": "curvy", "gender": "female", "pose": "sitting"})
    ids = tokenizer(prompt.positive)["input_ids"]
    assert len(ids) <= 77 and tokenizer.convert_ids_to_tokens(ids)[1:3] == ["full</w>", "body</w>"]


def test_lcm_lora_is_fused_in_fast_mode_and_off_in_quality(tiny_model_dir, tiny_engine):
    name = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    base = load_file(str(layout.part(tiny_model_dir, f"{layout.SDXL_DIR}/unet/diffusion_pytorch_model.safetensors")))
    layer = tiny_engine.pipe.unet.get_submodule(name)
    try:
        tiny_engine.modes.use("quality")
        torch.testing.assert_close(layer.base_layer.weight, base[f"{name}.weight"])
        tiny_engine.modes.use("fast")
        assert not torch.allclose(layer.base_layer.weight, base[f"{name}.weight"])
    finally:
        tiny_engine.modes.use("fast")
    assert "lcm-lora" in tiny_engine.loaded_parts and tiny_engine.method == "instantid"


def test_every_lcm_lora_module_of_the_file_is_applied(tiny_model_dir, tiny_engine):
    # The file is in the released kohya key format; a key diffusers' converter drops would leave
    # part of the LCM distillation out without any error.
    in_file = {key.split(".")[0] for key in load_file(str(layout.part(tiny_model_dir, layout.LCM_LORA_FILE)))}
    wrapped = {"lora_unet_" + name.replace(".", "_") for name, module in tiny_engine.pipe.unet.named_modules()
               if hasattr(module, "lora_A") and LCM_ADAPTER in module.lora_A}
    assert in_file and wrapped == in_file


def test_half_precision_engine_runs_both_modes(tiny_model_dir):
    # CUDA runs fp16: every tensor the engine makes itself (face tokens, IP-Adapter embeds, the
    # zero negative) must follow the weights' dtype. CPU fp16 catches a mismatch without a GPU.
    half = DevicePolicy("cpu", "float16", False, reason="tests")
    engine = load_engine(tiny_model_dir, half)
    assert {engine.pipe.unet.dtype, engine.pipe.controlnet.dtype, engine.pipe.vae.dtype} == {torch.float16}
    seen = []
    hook = engine.pipe.controlnet.register_forward_pre_hook(
        lambda _m, _a, kw: seen.append(kw["encoder_hidden_states"].dtype), with_kwargs=True)
    try:
        for mode, guidance in (("fast", 0.0), ("quality", 5.0)):
            out = generate_images(engine, inputs(num_images=2, steps=1, mode=mode, guidance=guidance))
            assert all(np.asarray(img).std() > 0 for img in out.images)
    finally:
        hook.remove()
    assert seen and set(seen) == {torch.float16}


@pytest.mark.parametrize("broken", ["missing_controlnet", "corrupt_ip_adapter"])
def test_fallback_to_plain_sdxl(tiny_model_dir, tmp_path, broken):
    if broken == "missing_controlnet":
        folder = _copy_without(tiny_model_dir, tmp_path / "m", layout.CONTROLNET_DIR)
    else:
        folder = _copy_without(tiny_model_dir, tmp_path / "m")
        layout.part(folder, layout.IP_ADAPTER_FILE).write_bytes(b"not a checkpoint")
    engine = load_engine(folder, CPU)
    assert engine.method == "sdxl_fallback" and engine.note == FALLBACK_NOTE
    assert type(engine.pipe).__name__ == "SDXLFallbackPipeline"
    assert getattr(engine.pipe.unet, "encoder_hid_proj", None) is None
    assert not _ip_adapter_processors(engine.pipe.unet)
    out = generate_images(engine, inputs(num_images=2, face_embedding=None, kps_image=None))
    assert len(out.images) == 2 and np.asarray(out.images[0]).std() > 0


def _ip_adapter_processors(unet) -> list[str]:
    from diffusers.models.attention_processor import (
        IPAdapterAttnProcessor,
        IPAdapterAttnProcessor2_0,
    )

    kinds = (IPAdapterAttnProcessor, IPAdapterAttnProcessor2_0)
    return [name for name, proc in unet.attn_processors.items() if isinstance(proc, kinds)]


def test_half_loaded_ip_adapter_leaves_no_image_attention_in_the_fallback(tiny_model_dir, tmp_path):
    # diffusers installs the IP-Adapter attention processors before it converts image_proj: a
    # checkpoint whose image_proj is damaged fails after the processors are in, and a fallback that
    # kept them would treat the last text tokens as image tokens (wrong images, no error).
    folder = _copy_without(tiny_model_dir, tmp_path / "half")
    checkpoint = layout.part(folder, layout.IP_ADAPTER_FILE)
    state = torch.load(checkpoint, weights_only=True)
    del state["image_proj"]["proj_in.weight"]
    torch.save(state, checkpoint)
    half = load_engine(folder, CPU)
    assert half.method == "sdxl_fallback" and "proj_in.weight" in half.fallback_reason
    assert not _ip_adapter_processors(half.pipe.unet)
    assert getattr(half.pipe.unet, "encoder_hid_proj", None) is None
    clean = load_engine(_copy_without(tiny_model_dir, tmp_path / "clean", layout.CONTROLNET_DIR), CPU)
    plain = {"num_images": 1, "face_embedding": None, "kps_image": None, "steps": 2}
    a = generate_images(half, inputs(**plain)).images[0]
    b = generate_images(clean, inputs(**plain)).images[0]
    assert np.array_equal(np.asarray(a), np.asarray(b))  # the same pictures as a fallback that never saw it


def test_cpu_run_loads_a_folder_that_holds_only_fp16_variant_files(tiny_model_dir, tmp_path):
    # `idbody models download` fetches SDXL's *.fp16.safetensors alone; an fp32 (CPU) run must
    # load those and upcast instead of reporting the base model missing.
    folder = _copy_without(tiny_model_dir, tmp_path / "m")
    renamed = []
    for weights in layout.part(folder, layout.SDXL_DIR).glob("*/*.safetensors"):
        weights.rename(weights.with_suffix(".fp16.safetensors"))
        renamed.append(weights.parent.name)
    assert {"unet", "text_encoder", "text_encoder_2", "vae"} <= set(renamed)
    engine = load_engine(folder, CPU)
    assert engine.method == "instantid" and engine.pipe.unet.dtype == torch.float32
    assert len(generate_images(engine, inputs(num_images=1, steps=1)).images) == 1


def test_models_missing_lists_files_and_command(tiny_model_dir, tmp_path):
    folder = _copy_without(tiny_model_dir, tmp_path / "m", layout.SDXL_DIR)
    with pytest.raises(IdentityBodyError) as err:
        load_engine(folder, CPU)
    assert err.value.code == ErrorCode.MODELS_MISSING
    assert "sdxl/model_index.json" in err.value.details["missing"]
    assert "sdxl/unet/config.json" in err.value.message
    assert "idbody models download" in err.value.message


def test_device_policy():
    cpu = DevicePolicy.decide(Settings(_env_file=None, memory_plan="model-offload"), cuda_available=False)
    assert (cpu.device, cpu.dtype_name, cpu.cpu_offload, cpu.variant) == ("cpu", "float32", False, None)
    gpu = DevicePolicy.decide(Settings(_env_file=None, memory_plan="group-offload", max_batch_images=4,
                                       default_width=640, default_height=960), cuda_available=True)
    assert (gpu.device, gpu.dtype, gpu.cpu_offload, gpu.memory_plan, gpu.max_rows, gpu.plan_size, gpu.variant) == \
        ("cuda", torch.float16, True, "group-offload", 4, (640, 960), "fp16")
    assert DevicePolicy.decide(Settings(_env_file=None), cuda_available=True).cpu_offload is False
    forced = DevicePolicy.decide(Settings(_env_file=None, device="cpu"), cuda_available=True)
    assert forced.device == "cpu" and forced.dtype == torch.float32


def test_retired_memory_switches_are_named_at_start(monkeypatch, caplog):
    monkeypatch.setenv("IDBODY_CPU_OFFLOAD", "true")
    monkeypatch.delenv("IDBODY_VAE_TILING", raising=False)
    with caplog.at_level(logging.WARNING, logger="worker.engine.devices"):
        DevicePolicy.decide(Settings(_env_file=None), cuda_available=False)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("IDBODY_CPU_OFFLOAD is no longer read" in m and "IDBODY_MEMORY_PLAN" in m for m in warned)
    assert not any("IDBODY_VAE_TILING" in m for m in warned)
