"""The micro-batcher's gathering rule on a recording pass function (no engine), then concurrent
``IdentityPipeline.generate`` calls on the tiny profile's fast engine sharing one denoise pass."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from shared.settings import Settings
from tests.pipeline_inputs import inputs, pixels
from worker.engine.denoise_pass import JobResult, PassJob
from worker.engine.micro_batcher import MicroBatcher, micro_batch_slots

LONG_WINDOW_S = 30.0  # "wait for company" in these tests: the gathering ends on a full batch, not the clock


class RecordingPass:
    """Answers each job with its seed; records the passes; can hold a pass until released."""

    def __init__(self) -> None:
        self.passes: list[list[int]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.started = threading.Event()

    def __call__(self, jobs: list[PassJob]) -> list[JobResult]:
        seeds = [job.request.rows[0].seed for job in jobs]
        self.passes.append(seeds)
        self.started.set()
        self.hold.wait(60)
        if any(seed < 0 for seed in seeds):
            raise RuntimeError("the pass broke")
        return [JobResult(images=[seed]) for seed in seeds]


def submit_all(batcher: MicroBatcher, jobs: list) -> list[JobResult]:
    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(batcher.submit, [PassJob(job.request()) for job in jobs]))


def test_jobs_of_one_shape_share_a_pass_up_to_the_image_limit():
    run = RecordingPass()
    batcher = MicroBatcher(run, max_images=4, window_s=LONG_WINDOW_S)
    results = submit_all(batcher, [inputs(seed=s, num_images=2) for s in (1, 2)])
    assert [r.images for r in results] == [[1], [2]]  # each caller gets its own job's result
    assert run.passes == [[1, 2]] or run.passes == [[2, 1]]


def test_a_full_batch_starts_at_once_and_the_rest_waits_for_the_next_pass():
    run = RecordingPass()
    batcher = MicroBatcher(run, max_images=2, window_s=0.5)
    results = submit_all(batcher, [inputs(seed=s, num_images=1) for s in (1, 2, 3)])
    assert sorted(r.images[0] for r in results) == [1, 2, 3]
    assert sorted(len(p) for p in run.passes) == [1, 2]  # never more than 2 images in a pass


def test_different_shapes_never_share_a_pass():
    run = RecordingPass()
    batcher = MicroBatcher(run, max_images=8, window_s=0.3)
    results = submit_all(batcher, [inputs(seed=1), inputs(seed=2, steps=3), inputs(seed=3)])
    assert [r.images for r in results] == [[1], [2], [3]]
    assert sorted(sorted(p) for p in run.passes) == [[1, 3], [2]]


def test_a_job_waits_at_most_the_window_for_company():
    run = RecordingPass()
    batcher = MicroBatcher(run, max_images=8, window_s=0.05)
    assert batcher.submit(PassJob(inputs(seed=5).request())).images == [5]  # alone, it still runs
    assert run.passes == [[5]]


def test_jobs_arriving_during_a_pass_run_together_in_the_next():
    run = RecordingPass()
    run.hold.clear()
    batcher = MicroBatcher(run, max_images=8, window_s=0)
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(batcher.submit, PassJob(inputs(seed=1).request()))
        assert run.started.wait(60)
        later = [pool.submit(batcher.submit, PassJob(inputs(seed=s).request())) for s in (2, 3)]
        until_waiting(batcher, 2)
        run.hold.set()
        assert [f.result().images for f in (first, *later)] == [[1], [2], [3]]
    assert run.passes[0] == [1] and sorted(run.passes[1]) == [2, 3]


def test_a_broken_pass_fails_its_jobs_and_the_batcher_serves_on():
    run = RecordingPass()
    batcher = MicroBatcher(run, max_images=8, window_s=0)
    broken = batcher.submit(PassJob(inputs(seed=-1).request()))
    assert isinstance(broken.error, RuntimeError)
    assert batcher.submit(PassJob(inputs(seed=4).request())).images == [4]


def test_close_ends_its_thread_and_a_later_job_starts_it_again():
    run = RecordingPass()
    batcher = MicroBatcher(run, max_images=8, window_s=0)
    assert batcher.submit(PassJob(inputs(seed=1).request())).images == [1]
    thread = batcher._thread
    batcher.close()
    assert thread is not None and not thread.is_alive()
    assert batcher.submit(PassJob(inputs(seed=2).request())).images == [2]
    batcher.close()


def until_waiting(batcher: MicroBatcher, count: int) -> None:
    from idbody.stack.polling import until

    until(lambda: len(batcher._waiting) >= count or None, 60, f"{count} jobs waiting for the next pass")


@pytest.mark.parametrize("fast, device, asked, slots", [
    ("auto", "cuda", True, 8), ("auto", "cpu", True, 1), ("on", "cpu", True, 8),
    ("auto", "cuda", False, 1), ("off", "cuda", True, 1)])
def test_slots_follow_the_fast_engine_and_the_setting(fast, device, asked, slots):
    settings = Settings(_env_file=None, engine_fast=fast, micro_batching=asked, max_batch_images=8)
    assert micro_batch_slots(settings, device) == slots


# --- on the tiny profile's fast engine ---------------------------------------------------------------


@pytest.fixture(scope="module")
def batching_pipeline(tiny_model_dir):
    from worker.identity_pipeline import IdentityPipeline

    settings = Settings(_env_file=None, device="cpu", model_profile="tiny", tiny_model_dir=tiny_model_dir,
                        engine_fast="on", max_batch_images=4, batch_window_ms=5000)
    passes: list[tuple[int, int]] = []
    pipeline = IdentityPipeline(settings).enable_micro_batching(on_pass=lambda j, i: passes.append((j, i)))
    pipeline.batcher.window_s = LONG_WINDOW_S  # the test's batch fills up; a busy machine must not end the wait
    pipeline.passes = passes
    yield pipeline
    pipeline.batcher.close()  # its thread's OpenMP team would slow every later CPU test


def test_concurrent_jobs_share_one_pass_and_each_gets_its_own_images(batching_pipeline):
    from tests.face_photos import tom

    face = tom()
    small = dict(width=128, height=128, num_inference_steps=2, face_detail=False)
    jobs = [dict(seed=11, num_images=1, body_type="athletic", **small),
            dict(seed=12, num_images=3, body_type="slim", **small)]
    with ThreadPoolExecutor(2) as pool:  # 4 images: the batch is full, so the pass starts at once
        together = list(pool.map(lambda kw: batching_pipeline.generate(face, **kw), jobs))
    assert batching_pipeline.passes == [(2, 4)]
    assert [len(r["images"]) for r in together] == [1, 3]
    alone_pipeline = batching_pipeline.batcher
    alone_pipeline.close()
    batching_pipeline.batcher = None  # the same engine, one job at a time
    try:
        alone = [batching_pipeline.generate(face, **kw) for kw in jobs]
    finally:
        batching_pipeline.batcher = alone_pipeline
    for shared, own in zip(together, alone):
        assert [d["seed"] for d in shared["image_details"]] == [d["seed"] for d in own["image_details"]]
        for a, b in zip(shared["images"], own["images"]):
            diff = np.abs(pixels(a) - pixels(b))
            assert float(diff.mean()) < 0.75 and int(diff.max()) <= 12
