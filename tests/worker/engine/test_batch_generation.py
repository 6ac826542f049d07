"""Micro-batching on the tiny profile (fast engine, CPU): several jobs in one denoise pass, each
getting the images it gets alone, with its own progress, cancel and failure."""

from __future__ import annotations

import numpy as np
import pytest

from shared.errors import ErrorCode, IdentityBodyError
from tests.pipeline_inputs import face_embedding, inputs, pixels
from worker.engine.generation import BatchJob, generate_batch
from worker.engine.face_geometry import region_mask


def _close(a, b) -> bool:
    diff = np.abs(pixels(a) - pixels(b))
    return float(diff.mean()) < 0.75 and int(diff.max()) <= 12


def _job_a(**kw):
    return inputs(seed=7, num_images=2, **kw)


def _job_b(**kw):
    return inputs(seed=31, num_images=1, face_embedding=face_embedding(5), prompt="full body photo of a man, walking",
                  negative_prompt="cartoon", ip_adapter_scale=0.5, controlnet_conditioning_scale=0.6, **kw)


@pytest.fixture(scope="module")
def alone(fast_tiny_engine):
    """Each job's images when it runs by itself."""
    return {name: generate_batch(fast_tiny_engine, [BatchJob(make())])[0].images
            for name, make in (("a", _job_a), ("b", _job_b))}


def test_each_job_in_a_batch_gets_the_images_it_gets_alone(fast_tiny_engine, alone):
    a, b = generate_batch(fast_tiny_engine, [BatchJob(_job_a()), BatchJob(_job_b())])
    assert a.error is None and b.error is None
    assert len(a.images) == 2 and len(b.images) == 1 and a.timings["batch_rows"] == 3
    assert all(_close(x, y) for x, y in zip(a.images, alone["a"]))
    assert _close(b.images[0], alone["b"][0])
    # and the jobs really are different people/prompts
    assert float(np.abs(pixels(a.images[0]) - pixels(b.images[0])).mean()) > 1.0


def test_progress_is_reported_per_job_every_step(fast_tiny_engine):
    calls = {"a": [], "b": []}
    generate_batch(fast_tiny_engine, [BatchJob(_job_a(), lambda s, t: calls["a"].append((s, t))),
                                      BatchJob(_job_b(), lambda s, t: calls["b"].append((s, t)))])
    assert calls["a"] == calls["b"] == [(1, 2), (2, 2)]


def test_a_canceled_job_is_dropped_and_the_other_finishes(fast_tiny_engine, alone):
    seen_b = []
    a, b = generate_batch(fast_tiny_engine, [BatchJob(_job_a(), lambda s, t: False),
                                             BatchJob(_job_b(), lambda s, t: seen_b.append(s))])
    assert isinstance(a.error, IdentityBodyError) and a.error.code == ErrorCode.JOB_CANCELED
    assert a.images == []
    assert b.error is None and seen_b == [1, 2] and _close(b.images[0], alone["b"][0])


def test_a_failing_job_never_takes_the_others_down(fast_tiny_engine, alone):
    def broken(step, total):
        raise RuntimeError("progress store is down")

    bad_input = inputs(seed=7, num_images=2, kps_image=None)
    a, b, c = generate_batch(fast_tiny_engine, [BatchJob(_job_a()), BatchJob(_job_b(), broken), BatchJob(bad_input)])
    assert isinstance(b.error, RuntimeError) and b.images == []
    assert isinstance(c.error, ValueError) and "kps_image" in str(c.error)
    assert a.error is None and all(_close(x, y) for x, y in zip(a.images, alone["a"]))


def test_every_job_canceled_stops_the_pass(fast_tiny_engine):
    steps = []

    def stop(step, total):
        steps.append(step)
        return False

    results = generate_batch(fast_tiny_engine, [BatchJob(_job_a(steps=3), stop), BatchJob(_job_b(steps=3), stop)])
    assert all(r.error.code == ErrorCode.JOB_CANCELED and r.images == [] for r in results)
    assert steps == [1, 1]  # told once each, then the pass stopped


def test_jobs_of_different_shapes_are_refused(fast_tiny_engine):
    with pytest.raises(ValueError, match="one shape"):
        generate_batch(fast_tiny_engine, [BatchJob(_job_a()), BatchJob(_job_b(steps=3))])


@pytest.mark.parametrize("shape", [{}, {"mode": "quality", "guidance": 5.0}], ids=["fast", "quality"])
def test_jobs_with_different_face_regions_share_a_pass_each_with_its_own(fast_tiny_engine, shape):
    """Face-region emphasis is on by default and every face lands somewhere else in the layout:
    the pass takes one mask per row (twice over under guidance), so such jobs still batch and
    still get their own images."""
    left, right = region_mask((128, 128), (16, 8, 56, 48)), region_mask((128, 128), (72, 8, 112, 48))
    jobs = {"left": lambda: _job_a(face_region=left, **shape), "right": lambda: _job_b(face_region=right, **shape),
            "none": lambda: inputs(seed=3, num_images=1, face_embedding=face_embedding(9), **shape)}
    alone = {name: generate_batch(fast_tiny_engine, [BatchJob(make())])[0].images for name, make in jobs.items()}
    together = generate_batch(fast_tiny_engine, [BatchJob(make()) for make in jobs.values()])
    assert [r.error for r in together] == [None, None, None] and together[0].timings["batch_rows"] == 4
    for result, name in zip(together, jobs):
        assert all(_close(x, y) for x, y in zip(result.images, alone[name])), name
    # the masks mattered: the left job's image differs from its unmasked twin
    unmasked = generate_batch(fast_tiny_engine, [BatchJob(_job_a(**shape))])[0].images
    assert float(np.abs(pixels(unmasked[0]) - pixels(alone["left"][0])).mean()) > 0.5
