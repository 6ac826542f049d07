"""The memory plan's row limit in the one runner: a pass with more rows than the plan allows at its
size runs as several pipeline calls, each row still getting the image it gets alone, and the
job's progress keeps one total that advances to its end."""

from __future__ import annotations

import dataclasses

import numpy as np

from tests.pipeline_inputs import inputs, pixels
from worker.engine.generation import BatchJob, generate_batch
from worker.engine.memory_plan import cpu_plan


def _close(a, b) -> bool:
    diff = np.abs(pixels(a) - pixels(b))
    return float(diff.mean()) < 0.75 and int(diff.max()) <= 12


def test_a_job_over_the_plans_rows_runs_as_several_calls_with_the_same_images(fast_tiny_engine):
    whole = dataclasses.replace(fast_tiny_engine, memory_plan=cpu_plan(8))
    one_row = dataclasses.replace(fast_tiny_engine, memory_plan=cpu_plan(1))
    (together,) = generate_batch(whole, [BatchJob(inputs(seed=7, num_images=3))])
    seen: list[tuple[int, int]] = []
    (split,) = generate_batch(one_row, [BatchJob(inputs(seed=7, num_images=3), lambda s, t: seen.append((s, t)))])
    assert together.error is None and split.error is None
    assert "pipeline_calls" not in together.timings and split.timings["pipeline_calls"] == 3
    assert len(split.images) == 3 and all(_close(a, b) for a, b in zip(split.images, together.images))
    steps = len(together.timings["denoise_step_s"])
    # one total from the first report to the last, steps never going back, ending at the total
    assert {t for _, t in seen} == {steps} and seen[-1] == (steps, steps)
    assert [s for s, _ in seen] == sorted(s for s, _ in seen)
    assert len(split.timings["denoise_step_s"]) == 3 * steps


def test_a_cancel_in_the_first_call_stops_the_rest(fast_tiny_engine):
    one_row = dataclasses.replace(fast_tiny_engine, memory_plan=cpu_plan(1))
    calls: list[int] = []
    (result,) = generate_batch(one_row, [BatchJob(inputs(seed=7, num_images=3),
                                                  lambda s, t: calls.append(s) or False)])
    assert result.error is not None and result.images == []
    assert calls == [1]   # told once, at the first step of the first call; nothing ran after
