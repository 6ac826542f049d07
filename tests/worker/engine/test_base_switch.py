"""Base checkpoints on the tiny profile, which ships two (``tiny`` and ``tiny-alt``): a pass naming
the second base switches the resident networks to it in place (other images, same seed), a pass
naming the default switches back (the same images as before), InstantID's parts survive the
switch, an unknown name is refused, and the micro-batcher never puts two bases in one pass."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from shared.errors import ErrorCode, IdentityBodyError
from shared.params import parse_params
from tests.pipeline_inputs import inputs, pixels
from worker.engine.denoise_pass import JobResult, PassJob
from worker.engine.generation import generate_images
from worker.engine.job_inputs import base_name
from worker.engine.micro_batcher import MicroBatcher
from worker.tiny.model_dir import SECOND_BASE


@pytest.fixture
def on_default(request):
    """Each test leaves its session-wide engine on the default base, as it found it."""
    engines = []
    yield engines.append
    for engine in engines:
        engine.bases.use(None)


def _mean_diff(a, b) -> float:
    return float(np.mean([np.abs(pixels(x) - pixels(y)).mean() for x, y in zip(a, b)]))


def test_the_tiny_profile_lists_two_bases_the_first_resident(tiny_engine):
    listed = tiny_engine.bases.describe()
    assert [(b["name"], b["default"]) for b in listed] == [("tiny", True), (SECOND_BASE, False)]
    assert all(len(b["digest"]) == 12 for b in listed)
    assert tiny_engine.bases.resident == "tiny"


def test_a_pass_on_the_second_base_switches_and_back_again(fast_tiny_engine, on_default, caplog):
    on_default(fast_tiny_engine)
    unet = fast_tiny_engine.pipe.unet
    ip_processors = {n: id(p) for n, p in unet.attn_processors.items()}
    weight = unet.conv_in.weight
    before = generate_images(fast_tiny_engine, inputs(seed=11)).images
    with caplog.at_level(logging.INFO, logger="worker.engine.base_switch"):
        other = generate_images(fast_tiny_engine, inputs(seed=11, base=SECOND_BASE)).images
    assert f"base model tiny -> {SECOND_BASE}" in caplog.text
    assert fast_tiny_engine.bases.resident == SECOND_BASE
    assert _mean_diff(before, other) > 5          # another base's weights made them
    # in place: the same parameter objects, the same IP-Adapter processors, the projection kept
    assert unet.conv_in.weight is weight
    assert {n: id(p) for n, p in unet.attn_processors.items()} == ip_processors
    assert unet.encoder_hid_proj is not None
    again = generate_images(fast_tiny_engine, inputs(seed=11, base="tiny")).images
    assert fast_tiny_engine.bases.resident == "tiny"
    # the fast engine restores the exact base weights (baked LoRA): the same images, bit for bit
    assert _mean_diff(before, again) == 0


def test_the_plain_engine_switches_with_the_peft_lora_in_both_modes(tiny_engine, on_default):
    on_default(tiny_engine)
    for mode, steps in (("fast", 2), ("quality", 2)):
        before = generate_images(tiny_engine, inputs(seed=5, mode=mode, steps=steps, guidance=0.0)).images
        other = generate_images(tiny_engine, inputs(seed=5, mode=mode, steps=steps, base=SECOND_BASE)).images
        again = generate_images(tiny_engine, inputs(seed=5, mode=mode, steps=steps)).images
        assert _mean_diff(before, other) > 5
        # PEFT's fuse/unfuse round trip may leave an ulp in fp32: the images stay the same to the eye
        assert _mean_diff(before, again) < 0.5


def test_an_unknown_base_is_refused_with_the_names_there_are(tiny_engine):
    with pytest.raises(IdentityBodyError) as caught:
        base_name(tiny_engine, parse_params({"base_model": "nope"}))
    assert caught.value.code is ErrorCode.UNKNOWN_BASE_MODEL
    assert caught.value.field == "base_model"
    assert "tiny, tiny-alt" in caught.value.message
    assert base_name(tiny_engine, parse_params({})) == "tiny"


def test_a_malformed_base_name_is_a_parameter_error():
    with pytest.raises(IdentityBodyError) as caught:
        parse_params({"base_model": "../sdxl"})
    assert caught.value.code is ErrorCode.INVALID_PARAMETER
    assert caught.value.field == "base_model"


class RecordingPass:
    def __init__(self) -> None:
        self.passes: list[set[str | None]] = []

    def __call__(self, jobs: list[PassJob]) -> list[JobResult]:
        self.passes.append({job.request.shape.base for job in jobs})
        return [JobResult(images=[job.request.shape.base]) for job in jobs]


def test_the_micro_batcher_never_mixes_bases_in_one_pass():
    run = RecordingPass()
    batcher = MicroBatcher(run, max_images=8, window_s=0.3)
    jobs = [inputs(seed=s, num_images=1, base=b) for s, b in enumerate(["tiny", SECOND_BASE] * 3)]
    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(batcher.submit, [PassJob(job.request()) for job in jobs]))
    batcher.close()
    assert [r.images for r in results] == [["tiny"], [SECOND_BASE]] * 3
    assert all(len(bases) == 1 for bases in run.passes)
    assert sum(1 for _ in run.passes) >= 2


def test_released_text_encoder_names_find_their_place(tiny_model_dir, tmp_path):
    """Released SDXL text encoders name their tensors ``text_model.*`` and carry ``position_ids``;
    transformers 5 loads CLIPTextModel without that prefix and the buffer: the switch maps them."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import CLIPTextModel

    from shared.settings import Settings
    from worker.engine.base_switch import copy_into
    from worker.engine.devices import DevicePolicy

    source = tiny_model_dir / "bases" / SECOND_BASE / "text_encoder"
    released = {f"text_model.{k}": v for k, v in load_file(str(next(source.glob("*.safetensors")))).items()}
    released["text_model.embeddings.position_ids"] = torch.arange(77)[None]
    folder = tmp_path / "text_encoder"
    folder.mkdir()
    save_file(released, str(folder / "model.safetensors"))
    model = CLIPTextModel.from_pretrained(tiny_model_dir / "sdxl" / "text_encoder")
    assert copy_into(model, folder, DevicePolicy.decide(Settings(_env_file=None, device="cpu"))) == len(released) - 1
    assert torch.equal(model.state_dict()["embeddings.token_embedding.weight"],
                       released["text_model.embeddings.token_embedding.weight"])


def test_a_switch_that_fails_half_way_leaves_no_base_resident_and_the_next_copies_a_whole_one(
        fast_tiny_engine, tiny_model_dir, tmp_path, on_default):
    import shutil

    from worker.models.bases import BaseCheckpoint

    on_default(fast_tiny_engine)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir / "bases" / SECOND_BASE, broken)
    for weights in (broken / "text_encoder").glob("*.safetensors"):
        weights.unlink()   # the UNet copies, then the first text encoder has nothing to copy
    before = generate_images(fast_tiny_engine, inputs(seed=3)).images
    bases = fast_tiny_engine.bases
    saved = bases.bases
    bases.bases = [*saved, BaseCheckpoint("broken", broken, False, "")]
    try:
        with pytest.raises(RuntimeError, match="no safetensors weights"):
            generate_images(fast_tiny_engine, inputs(seed=3, base="broken"))
        assert bases.resident is None
        again = generate_images(fast_tiny_engine, inputs(seed=3)).images   # the default, copied whole
    finally:
        bases.bases = saved
    assert bases.resident == "tiny" and _mean_diff(before, again) == 0
