"""Batched generation on the tiny profile: identity input matters, seeds reproduce, batches split
into reproducible images, progress and cancel, quality mode."""

from __future__ import annotations

import numpy as np
import pytest

from shared.errors import ErrorCode, IdentityBodyError
from tests.pipeline_inputs import SIZE, face_embedding, inputs, pixels
from worker.engine.generation import generate_images


def _diff(a, b) -> float:
    return float(np.abs(pixels(a) - pixels(b)).mean())


def test_same_seed_same_images(tiny_engine):
    first = generate_images(tiny_engine, inputs()).images
    again = generate_images(tiny_engine, inputs()).images
    assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(first, again))
    other = generate_images(tiny_engine, inputs(seed=8)).images
    assert _diff(first[0], other[0]) > 1.0


def test_different_face_embedding_gives_different_images(tiny_engine):
    base = generate_images(tiny_engine, inputs(num_images=1)).images[0]
    other = generate_images(tiny_engine, inputs(num_images=1, face_embedding=face_embedding(1))).images[0]
    assert _diff(base, other) > 0.5


def test_ip_adapter_scale_is_applied(tiny_engine):
    full = generate_images(tiny_engine, inputs(num_images=1, ip_adapter_scale=1.0)).images[0]
    off = generate_images(tiny_engine, inputs(num_images=1, ip_adapter_scale=0.0)).images[0]
    off_other_face = generate_images(tiny_engine, inputs(num_images=1, ip_adapter_scale=0.0,
                                                         controlnet_conditioning_scale=0.0,
                                                         face_embedding=face_embedding(1))).images[0]
    no_control = generate_images(tiny_engine, inputs(num_images=1, ip_adapter_scale=0.0,
                                                     controlnet_conditioning_scale=0.0)).images[0]
    assert _diff(full, off) > 0.5
    # With both identity paths off, the face embedding no longer matters.
    assert np.array_equal(pixels(no_control), pixels(off_other_face))


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_num_images_of_requested_size(tiny_engine, n):
    out = generate_images(tiny_engine, inputs(num_images=n, steps=1, width=SIZE, height=SIZE - 32))
    assert len(out.images) == n
    assert all(img.size == (SIZE, SIZE - 32) for img in out.images)


def test_image_i_of_a_batch_is_seed_plus_i_alone(tiny_engine):
    batch = generate_images(tiny_engine, inputs(num_images=3, seed=20)).images
    alone = generate_images(tiny_engine, inputs(num_images=1, seed=22)).images[0]
    assert float(np.abs(pixels(batch[2]) - pixels(alone)).max()) <= 3
    assert _diff(batch[0], alone) > 1.0


def test_progress_called_every_step_and_false_cancels(tiny_engine):
    calls = []
    out = generate_images(tiny_engine, inputs(steps=3), progress=lambda s, t: calls.append((s, t)))
    assert calls == [(1, 3), (2, 3), (3, 3)] and len(out.timings["denoise_step_s"]) == 3
    seen = []

    def stop_at_two(step, total):
        seen.append(step)
        return step < 2

    with pytest.raises(IdentityBodyError) as err:
        generate_images(tiny_engine, inputs(steps=4), progress=stop_at_two)
    assert err.value.code == ErrorCode.JOB_CANCELED
    assert seen == [1, 2]
    # The pipeline is usable again after a cancel.
    assert len(generate_images(tiny_engine, inputs(steps=1)).images) == 2


def test_quality_mode_runs_euler_with_guidance_and_fast_comes_back(tiny_engine):
    fast_before = generate_images(tiny_engine, inputs(num_images=1)).images[0]
    batches = []
    hook = tiny_engine.pipe.unet.register_forward_pre_hook(lambda _m, args: batches.append(args[0].shape[0]))
    try:
        quality = generate_images(tiny_engine, inputs(num_images=1, mode="quality", steps=2, guidance=5.0))
    finally:
        hook.remove()
    assert type(tiny_engine.pipe.scheduler).__name__ == "EulerDiscreteScheduler"
    assert tiny_engine.pipe.guidance_scale == 5.0 and batches == [2, 2]  # the batch is doubled for CFG
    assert len(quality.images) == 1 and not tiny_engine.modes.fused
    fast_after = generate_images(tiny_engine, inputs(num_images=1)).images[0]
    assert type(tiny_engine.pipe.scheduler).__name__ == "LCMScheduler" and tiny_engine.modes.fused
    assert float(np.abs(pixels(fast_before) - pixels(fast_after)).max()) <= 2
