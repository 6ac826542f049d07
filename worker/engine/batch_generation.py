"""Micro-batching: the images of several jobs that share a shape (mode, steps, size, guidance) in
ONE denoise pass, each image with its own prompt pair, face tokens and IP-Adapter embeds,
keypoint image, scales and seeded generator. Results, progress, cancel and failures stay per job.

Stages (the same as ``generate_images``, per row instead of per call):

1. check each job's inputs: a job with bad inputs fails alone, before the pass;
2. encode each job's prompt pair once, repeat it for the job's images (one row per image);
3. per-row identity conditioning: face embedding (-> IdentityNet's 16 face tokens and the
   IP-Adapter embeds), keypoint image, IP-Adapter and IdentityNet scales;
4. one generator per row, seeded ``job seed + i``: a job's image i is the image it gets alone;
5. denoise + decode in one pipeline call; after every step each live job's ``progress`` is told
   (on a GPU from CUDA events, without stalling the stream); a job whose progress answers False
   is canceled and its images are dropped, a job whose progress raises fails; the others go on,
   and the pass stops early only when no job is left;
6. split the images back per job.

If the pass itself fails (say, out of memory), each job is run again alone, so one job's
failure never fails the others.

Example::

    results = generate_batch(engine, [BatchJob(inputs_a, progress_a), BatchJob(inputs_b)])
    results[0].images, results[1].error
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from shared.errors import ErrorCode, IdentityBodyError
from worker.engine.generation import GenerationInputs, Progress, _encode
from worker.engine.progress_clock import BatchClock

log = logging.getLogger(__name__)


@dataclass
class BatchJob:
    inputs: GenerationInputs
    progress: Progress | None = None


@dataclass
class JobResult:
    images: list[Image.Image] = field(default_factory=list)
    error: BaseException | None = None
    timings: dict[str, Any] = field(default_factory=dict)


def batch_key(inputs: GenerationInputs) -> tuple:
    """Jobs with equal keys can share one denoise pass (a pass has the pose ControlNet in it or not)."""
    return (inputs.mode, int(inputs.steps), int(inputs.width), int(inputs.height), float(inputs.guidance),
            inputs.pose_image is not None)


class _LiveJob:
    def __init__(self, job: BatchJob) -> None:
        self.job = job
        self.inputs = job.inputs
        self.result = JobResult()

    @property
    def live(self) -> bool:
        return self.result.error is None

    def tell(self, step: int, total: int) -> None:
        """Report a finished step; a False answer cancels this job, an exception fails it."""
        if not self.live or self.job.progress is None:
            return
        try:
            answer = self.job.progress(step, total)
        except Exception as exc:  # noqa: BLE001 - a job's own callback fails that job only
            log.warning("progress of one batched job failed (%r); the others go on", exc)
            self.result.error = exc
            return
        if answer is False:
            self.result.error = IdentityBodyError(
                ErrorCode.JOB_CANCELED, f"Generation was canceled at step {step} of {total}.")


def _check(engine, inputs: GenerationInputs) -> Exception | None:
    if inputs.num_images < 1:
        return ValueError("num_images must be at least 1")
    if engine.method == "instantid" and (inputs.face_embedding is None or inputs.kps_image is None):
        return ValueError("InstantID generation needs face_embedding and kps_image")
    if inputs.kps_image is not None and inputs.kps_image.size != (inputs.width, inputs.height):
        return ValueError(f"kps_image is {inputs.kps_image.size}, the output {(inputs.width, inputs.height)}")
    if inputs.pose_image is not None and not getattr(engine, "pose_control", False):
        return ValueError("pose_image needs a pose ControlNet; none is loaded")
    return None


def generate_batch(engine, jobs: list[BatchJob]) -> list[JobResult]:
    """Run ``jobs`` (one shape: see ``batch_key``) in one denoise pass; one JobResult per job, in
    order, each with its images or its error. Never raises for a job's own failure."""
    if len({batch_key(j.inputs) for j in jobs}) > 1:
        raise ValueError("generate_batch needs jobs of one shape; group them by batch_key first")
    live = [_LiveJob(job) for job in jobs]
    for job in live:
        job.result.error = _check(engine, job.inputs)
    runnable = [job for job in live if job.live]
    if runnable:
        try:
            _run_pass(engine, runnable)
        except _NoJobLeft:
            pass
        except Exception as exc:  # noqa: BLE001 - isolate: retry each job alone
            if len(runnable) == 1:
                runnable[0].result.error = exc
            else:
                log.warning("a batched pass of %d jobs failed (%r); running each alone", len(runnable), exc)
                for job in runnable:
                    job.result = generate_batch(engine, [job.job])[0]
    return [job.result for job in live]


class _NoJobLeft(Exception):
    """Every job of the pass was canceled or failed: stop before decoding."""


def _rows(jobs: list[_LiveJob], min_rows: int) -> list[tuple[_LiveJob, int]]:
    rows = [(job, i) for job in jobs for i in range(job.inputs.num_images)]
    # Padding rows repeat the last row and are thrown away: a compiled graph with a dynamic batch
    # serves every size but one, so a single image runs as two.
    return rows + [rows[-1]] * max(0, min_rows - len(rows))


def _stack_prompts(pipe, jobs: list[_LiveJob], rows, guidance_on: bool) -> dict[str, Any]:
    import torch

    encoded = {id(job): _encode(pipe, job.inputs, guidance_on) for job in jobs}
    keys = encoded[id(jobs[0])].keys()
    return {k: torch.cat([encoded[id(job)][k] for job, _ in rows]) for k in keys}


def _identity_rows(engine, rows, guidance_on: bool) -> dict[str, Any]:
    import torch

    if engine.method != "instantid":
        return {}
    ip = [float(job.inputs.ip_adapter_scale) for job, _ in rows]
    control = [float(job.inputs.controlnet_conditioning_scale) for job, _ in rows]
    scales = getattr(engine.fast, "row_scales", None)
    if scales is not None:
        scales.set(ip=ip, control=control, guidance=guidance_on)
        control_scale = 1.0
    elif len(set(ip)) == 1 and len(set(control)) == 1:
        engine.pipe.set_ip_adapter_scale(ip[0])
        control_scale = control[0]
    else:
        raise ValueError("jobs with different scales share a pass only on the fast engine (per-row scales)")
    faces = np.stack([np.asarray(job.inputs.face_embedding, dtype=np.float32).reshape(-1) for job, _ in rows])
    poses = [job.inputs.pose_image for job, _ in rows]
    return {"face_embedding": torch.as_tensor(faces), "image": [job.inputs.kps_image for job, _ in rows],
            "controlnet_conditioning_scale": control_scale, "face_region": _row_face_regions(rows),
            "pose_image": poses if poses[0] is not None else None}


def _row_face_regions(rows) -> np.ndarray | None:
    """The face-region masks of the pass: one mask when every row has the same (a job alone),
    else one per row, each job's own (a row of a job without emphasis gets an all-ones mask,
    which restricts nothing)."""
    regions = [job.inputs.face_region for job, _ in rows]
    first = regions[0]
    if all(r is None for r in regions):
        return None
    if all(r is not None and r.shape == first.shape and np.array_equal(r, first) for r in regions):
        return first
    shape = next(r.shape for r in regions if r is not None)
    return np.stack([np.ones(shape, np.float32) if r is None else np.asarray(r, np.float32) for r in regions])


def _run_pass(engine, jobs: list[_LiveJob]) -> None:
    import torch

    from worker.engine.instantid_pipeline import guidance_applies

    pipe, shape = engine.pipe, jobs[0].inputs
    engine.modes.use(shape.mode)
    guidance_on = guidance_applies(pipe, shape.guidance)
    min_rows = getattr(engine.fast, "min_rows", 1)
    rows = _rows(jobs, min_rows if not guidance_on else (min_rows + 1) // 2)
    generators = [torch.Generator(engine.policy.generator_device()).manual_seed(job.inputs.seed + i)
                  for job, i in rows]
    clock = BatchClock(jobs, shape.steps, engine.policy.device, on_all_stopped=_NoJobLeft)
    embeds = _stack_prompts(pipe, jobs, rows, guidance_on)
    identity = _identity_rows(engine, rows, guidance_on)
    clock.encoded()
    output = pipe(**embeds, **identity, num_images_per_prompt=1, num_inference_steps=shape.steps,
                  guidance_scale=shape.guidance, generator=generators, width=shape.width, height=shape.height,
                  callback_on_step_end=clock, output_type="pil")
    timings = clock.finish()
    timings["batch_rows"] = len(rows)
    images = list(output.images)
    start = 0
    for job in jobs:
        n = job.inputs.num_images
        if job.live:
            job.result.images = images[start:start + n]
            job.result.timings = dict(timings)
        start += n
