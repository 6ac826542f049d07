"""The one denoise runner: a pass over a batch of rows, with one step clock, one cancel path and one
progress rule. A plain job is a pass of one job; a micro-batch is several jobs; the face-detail
pass's crops are rows too (img2img).

A row is one image being denoised: its seed, its IdentityNet keypoint image (and pose skeleton),
and, for img2img, the picture it starts from. A job brings its rows together with what they share
(prompt pair, face embedding, scales, face region); jobs of one ``PassShape`` share a pass.

Stages of ``run_pass``:

1. check each job: a job with bad inputs fails alone, before the pass; a refining job with no row
   (no face was found) runs nothing and has its steps counted as done at once;
2. encode each job's prompt pair once, repeated per row;
3. per-row identity conditioning: face embedding (-> IdentityNet's 16 face tokens and the
   IP-Adapter embeds), keypoint image, IP-Adapter and IdentityNet scales;
4. one generator per row, seeded with the row's seed: a row gets the image it gets alone;
5. denoise + decode in one pipeline call; after every step each live job is told by the one
   progress rule (``StepCount``): a job whose progress answers False is canceled, a job whose
   progress raises fails, the others go on; the pass stops early only when no job is left;
6. split the images back per job.

If the pass itself fails (say, out of memory), each job is run again alone, so one job's failure
never fails the others.

Example::

    shape = PassShape(mode="fast", steps=8, width=768, height=1024, guidance=0.0)
    job = PassJob(PassRequest(shape, "a person", "", rows=[Row(seed=42, kps_image=kps)],
                              face_embedding=emb), progress=lambda step, total: True)
    (result,) = run_pass(engine, [job])
    result.images, result.error, result.timings["denoise_step_s"]
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from PIL import Image

from shared.errors import ErrorCode, IdentityBodyError
from worker.engine.base_switch import use_base
from worker.engine.instantid_pipeline import guidance_applies
from worker.engine.progress_clock import BatchClock

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

    from worker.engine.devices import DevicePolicy
    from worker.engine.lcm_mode import ModeSwitch
    from worker.engine.row_scales import RowScales

log = logging.getLogger(__name__)

# (step, total) for the Python API's callbacks; the worker's ProgressWriter also takes the stage
Progress = Callable[..., "bool | None"]


class FastParts(Protocol):
    """What the runner reads of a fast engine (worker.engine.fast_mode.FastEngine)."""

    row_scales: RowScales | None


class DenoiseEngine(Protocol):
    """What the runner needs of a loaded engine (worker.engine.loading.Engine)."""

    pipe: DiffusionPipeline
    method: str
    policy: DevicePolicy
    modes: ModeSwitch
    fast: FastParts | None

    @property
    def pose_control(self) -> bool: ...


def refined_steps(steps: int, strength: float) -> int:
    """Denoise steps an img2img pass runs: diffusers' rule, the last int(steps·strength) of the
    schedule. 0 means the pass has nothing to do."""
    return min(int(steps * strength), steps)


@dataclass(frozen=True)
class PassShape:
    """What every row of a pass has in common; jobs of equal shapes can share a pass."""

    mode: str
    steps: int                       # the schedule's length
    width: int
    height: int
    guidance: float
    strength: float | None = None    # img2img: the share of the schedule rerun; None: text-to-image
    pose: bool = False               # the pose ControlNet runs in this pass
    base: str | None = None          # the base checkpoint the pass runs on (None: the default)

    @property
    def denoise_steps(self) -> int:
        return self.steps if self.strength is None else refined_steps(self.steps, self.strength)


@dataclass
class Row:
    seed: int
    kps_image: Image.Image | None = None          # IdentityNet's condition at the pass's size
    pose_image: Image.Image | None = None         # OpenPose skeleton, with a pose ControlNet
    image_to_refine: Image.Image | None = None    # img2img: the picture the row starts from


@dataclass
class PassRequest:
    """One job's rows and what they share."""

    shape: PassShape
    prompt: str
    negative_prompt: str
    rows: list[Row]
    face_embedding: np.ndarray | None = None      # raw 512-d antelopev2 embedding
    face_region: np.ndarray | None = None         # (height, width), 1 on the face
    controlnet_conditioning_scale: float = 0.8
    ip_adapter_scale: float = 0.8

    @property
    def num_images(self) -> int:
        return len(self.rows)


@dataclass(frozen=True)
class StepCount:
    """Where a pass's steps fall in its job's own count (the one progress rule): step s of the pass
    is reported as ``before + s`` of ``total`` (this pass's steps when None), with ``stage`` to a
    callback that takes one."""

    before: int = 0
    total: int | None = None
    stage: str | None = None


@dataclass
class PassJob:
    request: PassRequest
    progress: Progress | None = None
    count: StepCount = field(default_factory=StepCount)


@dataclass
class JobResult:
    images: list[Image.Image] = field(default_factory=list)
    error: BaseException | None = None
    timings: dict[str, Any] = field(default_factory=dict)


def canceled(step: int, total: int) -> IdentityBodyError:
    return IdentityBodyError(ErrorCode.JOB_CANCELED, f"Generation was canceled at step {step} of {total}.")


class _LiveJob:
    def __init__(self, job: PassJob) -> None:
        self.job, self.request = job, job.request
        self.result = JobResult()
        self._with_stage = job.count.stage is not None and _takes_stage(job.progress)

    @property
    def live(self) -> bool:
        return self.result.error is None

    def tell(self, step: int, _pass_total: int | None = None) -> None:
        """Report step ``step`` of this pass; a False answer cancels the job, an exception fails it."""
        if not self.live or self.job.progress is None:
            return
        count = self.job.count
        done, total = count.before + step, count.total or self.request.shape.denoise_steps
        try:
            answer = (self.job.progress(done, total, count.stage) if self._with_stage
                      else self.job.progress(done, total))
        except Exception as exc:  # noqa: BLE001 - a job's own callback fails that job only
            log.warning("progress of one job of a pass failed (%r); the others go on", exc)
            self.result.error = exc
            return
        if answer is False:
            self.result.error = canceled(done, total)


def _takes_stage(progress: Progress | None) -> bool:
    if progress is None:
        return False
    try:
        inspect.signature(progress).bind(0, 0, "stage")
    except (TypeError, ValueError):
        return False
    return True


def _check(engine: DenoiseEngine, request: PassRequest) -> Exception | None:
    shape, rows = request.shape, request.rows
    if not rows:
        return None if shape.strength is not None else ValueError("num_images must be at least 1")
    if engine.method == "instantid" and (request.face_embedding is None or any(r.kps_image is None for r in rows)):
        return ValueError("InstantID generation needs face_embedding and kps_image")
    if shape.pose and not engine.pose_control:
        return ValueError("pose_image needs a pose ControlNet; none is loaded")
    if shape.pose != any(r.pose_image is not None for r in rows):
        return ValueError("a pass with the pose ControlNet needs a pose_image on every row")
    if shape.strength is not None and any(r.image_to_refine is None for r in rows):
        return ValueError("an img2img pass needs an image_to_refine on every row")
    return None


def run_pass(engine: DenoiseEngine, jobs: list[PassJob]) -> list[JobResult]:
    """Run ``jobs`` (one shape) in one denoise pass; one JobResult per job, in order, each with its
    images or its error. Never raises for a job's own failure."""
    if len({job.request.shape for job in jobs}) > 1:
        raise ValueError("a denoise pass needs jobs of one shape; group them by their PassShape first")
    live = [_LiveJob(job) for job in jobs]
    for job in live:
        job.result.error = _check(engine, job.request)
        steps = job.request.shape.denoise_steps
        if job.live and not job.request.rows and steps:   # nothing to refine: its steps are done at once
            job.tell(steps)
    runnable = [job for job in live if job.live and job.request.rows]
    if runnable:
        try:
            _run(engine, runnable)
        except _NoJobLeft:
            pass
        except Exception as exc:  # noqa: BLE001 - isolate: retry each job alone
            if len(runnable) == 1:
                runnable[0].result.error = exc
            else:
                log.warning("a denoise pass of %d jobs failed (%r); running each alone", len(runnable), exc)
                for job in runnable:
                    job.result = run_pass(engine, [job.job])[0]
    return [job.result for job in live]


class _NoJobLeft(Exception):
    """Every job of the pass was canceled or failed: stop before decoding."""


def _rows(jobs: list[_LiveJob]) -> list[tuple[_LiveJob, Row]]:
    return [(job, row) for job in jobs for row in job.request.rows]


def encode_prompt_pair(pipe, prompt: str, negative_prompt: str, guidance_on: bool) -> dict[str, Any]:
    """The prompt embeddings a pipeline call takes; the negative ones only under guidance."""
    with torch.no_grad():
        pos, neg, pooled, neg_pooled = pipe.encode_prompt(
            prompt=prompt, device=pipe._execution_device, num_images_per_prompt=1,
            do_classifier_free_guidance=guidance_on, negative_prompt=negative_prompt)
    embeds = {"prompt_embeds": pos, "pooled_prompt_embeds": pooled}
    if guidance_on:
        embeds.update(negative_prompt_embeds=neg, negative_pooled_prompt_embeds=neg_pooled)
    return embeds


def _encode_prompts(pipe, jobs: list[_LiveJob], guidance_on: bool) -> dict[int, dict[str, Any]]:
    """Each job's prompt pair, encoded once for all of the pass's pipeline calls."""
    return {id(job): encode_prompt_pair(pipe, job.request.prompt, job.request.negative_prompt, guidance_on)
            for job in jobs}


def _stack_prompts(encoded: dict[int, dict[str, Any]], rows) -> dict[str, Any]:
    keys = encoded[id(rows[0][0])].keys()
    return {k: torch.cat([encoded[id(job)][k] for job, _ in rows]) for k in keys}


def _identity_rows(engine: DenoiseEngine, rows, guidance_on: bool) -> dict[str, Any]:
    if engine.method != "instantid":
        return {}
    ip = [float(job.request.ip_adapter_scale) for job, _ in rows]
    control = [float(job.request.controlnet_conditioning_scale) for job, _ in rows]
    scales = engine.fast.row_scales if engine.fast is not None else None
    if scales is not None:
        scales.set(ip=ip, control=control, guidance=guidance_on)
        control_scale = 1.0
    elif len(set(ip)) == 1 and len(set(control)) == 1:
        engine.pipe.set_ip_adapter_scale(ip[0])
        control_scale = control[0]
    else:
        raise ValueError("jobs with different scales share a pass only on the fast engine (per-row scales)")
    faces = np.stack([np.asarray(job.request.face_embedding, dtype=np.float32).reshape(-1) for job, _ in rows])
    poses = [row.pose_image for _, row in rows]
    return {"face_embedding": torch.as_tensor(faces), "image": [row.kps_image for _, row in rows],
            "controlnet_conditioning_scale": control_scale, "face_region": _row_face_regions(rows),
            "pose_image": poses if poses[0] is not None else None}


def _row_face_regions(rows) -> np.ndarray | None:
    """The face-region masks of the pass: one mask when every row has the same (a job alone),
    else one per row, each job's own (a row of a job without emphasis gets an all-ones mask,
    which restricts nothing)."""
    regions = [job.request.face_region for job, _ in rows]
    first = regions[0]
    if all(r is None for r in regions):
        return None
    if all(r is not None and r.shape == first.shape and np.array_equal(r, first) for r in regions):
        return first
    shape = next(r.shape for r in regions if r is not None)
    return np.stack([np.ones(shape, np.float32) if r is None else np.asarray(r, np.float32) for r in regions])


def _refining(shape: PassShape, rows) -> dict[str, Any]:
    if shape.strength is None:
        return {}
    return {"image_to_refine": [row.image_to_refine for _, row in rows], "strength": shape.strength}


def pass_sizes(engine: DenoiseEngine, shape: PassShape, guidance_on: bool, rows: int) -> list[int]:
    """How ``rows`` rows of ``shape`` split into pipeline calls: the engine's memory plan caps the
    rows one call may hold at this size (worker.engine.memory_plan); without a plan, one call."""
    plan = getattr(engine, "memory_plan", None)   # test engines built by hand carry none
    if plan is None:
        return [rows]
    return plan.passes(rows, shape.width, shape.height, guidance_on)


class _Share:
    """A job as one of ``count`` pipeline calls of a pass sees it: every call runs the whole
    schedule, so call ``index``'s step s is reported as step ⌈(index·T + s) / count⌉ of the job's T.
    The job's total never changes; its steps advance evenly across the calls, from 1 to T."""

    def __init__(self, job: _LiveJob, index: int, count: int, steps: int) -> None:
        self.job, self.index, self.count, self.steps = job, index, count, steps

    @property
    def live(self) -> bool:
        return self.job.live

    def tell(self, step: int, _pass_total: int | None = None) -> None:
        self.job.tell(-(-(self.index * self.steps + step) // self.count))


def _run(engine: DenoiseEngine, jobs: list[_LiveJob]) -> None:
    pipe, shape = engine.pipe, jobs[0].request.shape
    use_base(engine, shape.base)
    engine.modes.use(shape.mode)
    guidance_on = guidance_applies(pipe, shape.guidance)
    encoded = _encode_prompts(pipe, jobs, guidance_on)
    real = _rows(jobs)
    sizes = pass_sizes(engine, shape, guidance_on, len(real))
    images: list[Image.Image] = []
    calls: list[dict[str, Any]] = []
    for index, size in enumerate(sizes):
        if not any(job.live for job in jobs):
            raise _NoJobLeft("every job of the pass stopped between its pipeline calls")
        chunk = real[len(images):len(images) + size]
        views = [_Share(job, index, len(sizes), shape.denoise_steps) for job in jobs]
        out, timings = _call(engine, shape, chunk, encoded, guidance_on, views)
        images += out
        calls.append(timings)
    timings = _joined(calls)
    start = 0
    for job in jobs:
        n = job.request.num_images
        if job.live:
            job.result.images = images[start:start + n]
            job.result.timings = dict(timings)
        start += n


def _call(engine: DenoiseEngine, shape: PassShape, rows, encoded, guidance_on: bool,
          views: list[_Share]) -> tuple[list[Image.Image], dict[str, Any]]:
    """One pipeline call over ``rows``: denoise + decode, its steps told through ``views``."""
    pipe = engine.pipe
    generators = [torch.Generator(engine.policy.generator_device()).manual_seed(row.seed) for _, row in rows]
    clock = BatchClock(views, shape.denoise_steps, engine.policy.device, on_all_stopped=_NoJobLeft)
    embeds = _stack_prompts(encoded, rows)
    identity = _identity_rows(engine, rows, guidance_on)
    clock.encoded()
    output = pipe(**embeds, **identity, **_refining(shape, rows), num_images_per_prompt=1,
                  num_inference_steps=shape.steps, guidance_scale=shape.guidance, generator=generators,
                  width=shape.width, height=shape.height, callback_on_step_end=clock, output_type="pil")
    timings = clock.finish()
    timings["batch_rows"] = len(rows)
    return list(output.images), timings


def _joined(calls: list[dict[str, Any]]) -> dict[str, Any]:
    """The timings of a pass made of several pipeline calls: seconds summed, step times listed."""
    if len(calls) == 1:
        return calls[0]
    return {"prompt_encode_s": sum(c["prompt_encode_s"] for c in calls),
            "denoise_step_s": [s for c in calls for s in c["denoise_step_s"]],
            "decode_s": sum(c["decode_s"] for c in calls), "generate_s": sum(c["generate_s"] for c in calls),
            "batch_rows": max(c["batch_rows"] for c in calls), "pipeline_calls": len(calls)}
