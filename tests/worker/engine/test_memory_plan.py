"""The memory plan: its arithmetic against the H100 peaks it was fitted to, the plan each card size
gets, and each plan applied to the tiny pipeline on the CPU with diffusers' own hooks."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch

from shared.settings import Settings
from tests.pipeline_inputs import inputs
from worker.engine.devices import DevicePolicy, loaded_weights
from worker.engine.generation import generate_images
from worker.engine.loading import load_engine
from worker.engine.memory_plan import (
    CALIBRATION,
    PLACEMENTS,
    Calibration,
    MemoryPlan,
    Shape,
    card_free_gib,
    choose_plan,
    face_models_gib,
    manifest_weights,
    predicted_peak,
)

FULL_BODY = Shape(832, 1216)


def plan_on(card_gib: float, **kw) -> MemoryPlan:
    return choose_plan(manifest_weights(), card_free_gib(card_gib, face_models_gib()), FULL_BODY, **kw)


def test_the_manifest_gives_the_released_networks_sizes_in_fp16():
    weights = manifest_weights()
    # UNet 5.1 GB fp16 + the fp32 ip-adapter.bin halved + the LCM-LoRA; IdentityNet 2.5 GB
    assert 6.3e9 < weights.unet < 6.5e9 and weights.controlnet == 2_502_139_136
    assert weights.pose_controlnet == 0 and manifest_weights(pose=True).pose_controlnet > 2e9
    assert 9.5 < weights.total_gib() < 10.5
    assert weights.total_gib(fp8=True) < weights.total_gib() - 1.0


def test_the_activation_model_reproduces_the_peaks_it_was_fitted_to():
    weights = manifest_weights()
    fit = Calibration.fit(weights)
    assert 1.5 < fit.decode_gib_per_mp < 3.5 and 0 < fit.overhead_gib < 1.0
    for images, width, height, measured in CALIBRATION:
        predicted = predicted_peak("resident", weights, fit, Shape(width, height, guidance=False), images, False)
        assert abs(predicted - measured) / measured < 0.05, (images, width, height, predicted, measured)


def test_the_seeds_4_gb_card_gets_a_plan_that_fits():
    plan = plan_on(4.0)
    assert plan.name == "group-offload" and plan.offloads
    assert plan.vae_tiling and "controlnet" in plan.fp8 and "unet" not in plan.fp8
    assert plan.rows_per_pass >= 1 and plan.notes == ()
    assert plan.predicted_peak_gib <= plan.budget_gib < 4.0
    assert plan.compile is False


def test_an_80_gb_card_keeps_everything_resident_with_8_rows_and_compiles():
    plan = plan_on(80.0)
    assert (plan.name, plan.rows_per_pass, plan.vae_tiling, plan.fp8, plan.compile) == \
        ("resident", 8, False, (), True)
    assert plan.predicted_peak_gib < 40
    assert plan != plan_on(4.0)


def test_more_memory_never_picks_a_slower_placement_or_fewer_rows():
    plans = [plan_on(gib) for gib in (4, 6, 8, 10, 12, 16, 20, 24, 32, 48, 80)]
    ranks = [PLACEMENTS.index(p.name) for p in plans]
    assert ranks == sorted(ranks, reverse=True) and len(set(ranks)) >= 3
    for smaller, bigger in pairwise(plans):
        if smaller.name == bigger.name:
            assert bigger.rows_per_pass >= smaller.rows_per_pass
        assert smaller.predicted_peak_gib <= smaller.budget_gib


def test_a_plan_that_offloads_says_why_it_skips_compiling():
    plan = plan_on(4.0, compile_wanted=True)
    assert any("compile skipped" in note for note in plan.notes)
    assert "compile skipped" not in " ".join(plan_on(80.0, compile_wanted=True).notes)
    assert "compile" in plan.describe() and plan.report()["compile"] is False


def test_the_operator_names_a_plan_and_unknown_names_are_refused():
    plan = plan_on(80.0, wanted="model-offload")
    assert plan.name == "model-offload" and "IDBODY_MEMORY_PLAN" in plan.reason
    with pytest.raises(ValueError, match="choose from"):
        plan_on(80.0, wanted="everything-in-l2")


def test_nothing_fits_still_gives_one_row_and_says_so():
    plan = choose_plan(manifest_weights(), 1.0, FULL_BODY)
    assert plan.name == "group-offload" and plan.rows_per_pass == 1
    assert "over the" in plan.notes[0]


def test_rows_for_a_bigger_image_are_no_more_than_at_the_planned_size():
    plan = plan_on(24.0)
    assert plan.rows_for(832, 1216) == plan.rows_per_pass
    assert 1 <= plan.rows_for(2048, 2048) <= plan.rows_per_pass
    small = plan_on(8.0)
    assert small.rows_for(2048, 2048) < small.rows_per_pass


def test_a_job_splits_into_passes_of_at_most_the_plans_rows():
    small, big = plan_on(4.0), plan_on(80.0)
    assert small.rows_per_pass == 2 and small.passes(4, 832, 1216) == [2, 2]
    assert small.passes(5, 832, 1216) == [2, 2, 1] and small.passes(1, 832, 1216) == [1]
    assert big.passes(4, 832, 1216) == [4] and big.passes(12, 832, 1216) == [6, 6]
    one_row = MemoryPlan("group-offload", "cuda", rows_per_pass=1)
    assert one_row.passes(4, 832, 1216) == [1, 1, 1, 1]


def test_the_report_is_plain_json_values():
    report = plan_on(12.0).report()
    assert set(report) >= {"name", "rows_per_pass", "fp8", "vae_tiling", "compile", "predicted_peak_gib",
                           "budget_gib", "size", "reason", "notes"}
    assert report["size"] == [832, 1216] and isinstance(report["predicted_peak_gib"], float)


def test_the_cpu_gets_the_cpu_plan(tiny_engine):
    plan = tiny_engine.memory_plan
    assert (plan.name, plan.device, plan.offloads, plan.predicted_peak_gib) == ("cpu", "cpu", False, None)
    assert plan.rows_per_pass == Settings(_env_file=None).max_batch_images


def test_loaded_weights_count_the_unet_with_its_adapters(tiny_engine):
    weights = loaded_weights(tiny_engine.pipe)
    unet_params = sum(p.numel() for p in tiny_engine.pipe.unet.parameters())
    assert weights.unet == unet_params * 4 and weights.controlnet > 0 and weights.vae > 0


def _fresh(tiny_model_dir, fast=None):
    return load_engine(tiny_model_dir, DevicePolicy.decide(Settings(_env_file=None, device="cpu")), fast=fast)


def _leaf_hooks(module) -> int:
    return sum(1 for m in module.modules() if getattr(m, "_diffusers_hook", None) is not None)


@pytest.mark.parametrize("name", ["resident-fp8", "model-offload", "group-offload"])
def test_each_plan_applied_to_the_tiny_pipeline_generates_in_both_modes(tiny_model_dir, name):
    """The CPU stands in for the card: onload device = offload device = cpu, no CUDA streams; the
    hooks are diffusers' and accelerate's own."""
    engine = _fresh(tiny_model_dir)
    fp8 = ("controlnet", "text_encoder", "text_encoder_2")
    plan = MemoryPlan(name, "cpu", fp8=fp8, vae_tiling=True, rows_per_pass=1)
    engine.policy.save_memory(engine.pipe, plan)
    pipe = engine.pipe
    assert torch.float8_e4m3fn in {p.dtype for p in pipe.controlnet.parameters()}
    assert torch.float8_e4m3fn not in {p.dtype for p in pipe.unet.parameters()}
    assert pipe.vae.use_tiling and pipe.vae.use_slicing
    if name == "model-offload":
        assert len(pipe._all_hooks) >= 4
    if name == "group-offload":
        assert _leaf_hooks(pipe.unet) > 10 and _leaf_hooks(pipe.text_encoder_2) > 0
    fast = generate_images(engine, inputs(num_images=2))
    quality = generate_images(engine, inputs(num_images=1, mode="quality", guidance=3.0))
    assert len(fast.images) == 2 and len(quality.images) == 1
    assert fast.images[0].size == (inputs().width, inputs().height)


def test_fp8_storage_leaves_the_fast_engines_fused_projections_whole(tiny_model_dir):
    from worker.engine.fast_mode import FastOptions

    engine = _fresh(tiny_model_dir, fast=FastOptions())
    plan = MemoryPlan("resident-fp8", "cpu", fp8=("controlnet", "text_encoder"), rows_per_pass=2)
    engine.policy.save_memory(engine.pipe, plan)
    fused = [m for m in engine.pipe.controlnet.modules() if hasattr(m, "to_qkv")]
    assert fused and all(m.to_qkv.weight.dtype != torch.float8_e4m3fn for m in fused)
    assert all(m.to_q.weight.data_ptr() == m.to_qkv.weight.data_ptr() for m in fused)   # still views
    assert torch.float8_e4m3fn in {p.dtype for p in engine.pipe.controlnet.parameters()}
    images = generate_images(engine, inputs(num_images=2)).images
    assert len(images) == 2 and len(generate_images(engine, inputs(mode="quality", guidance=3.0)).images) == 2


def test_offloading_plans_run_the_plain_engine_and_only_resident_ones_compile():
    from worker.engine.fast_mode import FastOptions
    from worker.engine.loading import fast_options_under

    compiled = FastOptions(compile_mode="reduce-overhead")
    assert fast_options_under(plan_on(4.0), compiled) is None                # group-offload
    assert fast_options_under(plan_on(80.0, wanted="model-offload"), FastOptions()) is None
    assert fast_options_under(plan_on(80.0), compiled) == compiled            # resident, untiled
    tiled = fast_options_under(plan_on(24.0), compiled)                       # resident, VAE tiled
    assert tiled is not None and tiled.compile_mode is None and tiled.fuse_qkv
    assert fast_options_under(plan_on(80.0), None) is None
