"""One batched generation on a loaded Engine: prompt encode -> denoise (with progress and cancel)
-> decode, timed per stage.

All ``num_images`` images come out of ONE denoise pass; image i has its own CPU generator seeded
``seed + i``, so generating with seed s+i and num_images=1 reproduces image i alone.

This is stage 3 of a job (worker.identity_pipeline numbers them); stage 4, the face-detail pass,
is worker.engine.face_detail, which times, reports and cancels its steps with the same StepClock.
``stage_progress`` counts both stages' steps into one total for the job's progress.

Example::

    out = generate_images(engine, GenerationInputs(prompt="...", negative_prompt="...",
                          face_embedding=face.embedding, kps_image=kps, seed=42, num_images=4))
    out.images, out.timings["denoise_step_s"]
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from PIL import Image

from shared.errors import ErrorCode, IdentityBodyError

Progress = Callable[[int, int], "bool | None"]


@dataclass
class GenerationInputs:
    prompt: str
    negative_prompt: str
    seed: int
    face_embedding: np.ndarray | None = None     # raw 512-d antelopev2 embedding
    kps_image: Image.Image | None = None          # IdentityNet condition at the output size
    face_region: np.ndarray | None = None         # (height, width), 1 on the face: face-region emphasis
    pose_image: Image.Image | None = None         # OpenPose skeleton at the output size, for a pose ControlNet
    num_images: int = 4
    width: int = 768
    height: int = 1024
    mode: str = "fast"
    steps: int = 8
    guidance: float = 0.0
    controlnet_conditioning_scale: float = 0.8
    ip_adapter_scale: float = 0.8


@dataclass
class GenerationOutput:
    images: list[Image.Image]
    timings: dict[str, Any] = field(default_factory=dict)


class _StepClock:
    """callback_on_step_end: timestamps every step, reports progress, stops on a False answer."""

    def __init__(self, total: int, progress: Progress | None, sync: Callable[[], None]) -> None:
        self.total, self.progress, self.sync = total, progress, sync
        self.marks: list[float] = []

    def __call__(self, pipe, step: int, _timestep, callback_kwargs: dict) -> dict:
        self.sync()
        self.marks.append(time.perf_counter())
        if self.progress is not None and self.progress(step + 1, self.total) is False:
            pipe._interrupt = True
            # Raising here (not just setting the interrupt) skips decoding latents nobody will see.
            raise IdentityBodyError(ErrorCode.JOB_CANCELED, f"Generation was canceled at step {step + 1} of {self.total}.")
        return callback_kwargs


def stage_progress(progress: Progress | None, done_before: int, total: int,
                   stage: str | None = None) -> Progress | None:
    """A stage's own ``(step, stage_total)`` callback counted into the job's ``total``: the base
    pass reports steps 1..steps, the face-detail pass (stage 4) the ones after them. With
    ``stage``, a callback that takes one (the worker's ProgressWriter) is told the stage too.

    Example::

        generate_images(engine, inputs, progress=stage_progress(progress, 0, steps + detail))
    """
    if progress is None:
        return None
    if stage is not None and _takes_stage(progress):
        return lambda step, _stage_total: progress(done_before + step, total, stage)
    return lambda step, _stage_total: progress(done_before + step, total)


def _takes_stage(progress: Callable[..., Any]) -> bool:
    # the Python API's callbacks are (step, total); the worker's ProgressWriter takes a stage too
    import inspect

    try:
        inspect.signature(progress).bind(0, 0, "stage")
    except (TypeError, ValueError):
        return False
    return True


def _sync_for(device: str) -> Callable[[], None]:
    if device == "cuda":
        import torch

        return torch.cuda.synchronize
    return lambda: None


def _encode(pipe, inputs: GenerationInputs, guidance_on: bool) -> dict[str, Any]:
    return encode_prompt_pair(pipe, inputs.prompt, inputs.negative_prompt, guidance_on)


def encode_prompt_pair(pipe, prompt: str, negative_prompt: str, guidance_on: bool) -> dict[str, Any]:
    """The prompt embeddings a pipeline call takes; the negative ones only under guidance."""
    import torch

    with torch.no_grad():
        pos, neg, pooled, neg_pooled = pipe.encode_prompt(
            prompt=prompt, device=pipe._execution_device, num_images_per_prompt=1,
            do_classifier_free_guidance=guidance_on, negative_prompt=negative_prompt)
    embeds = {"prompt_embeds": pos, "pooled_prompt_embeds": pooled}
    if guidance_on:
        embeds.update(negative_prompt_embeds=neg, negative_pooled_prompt_embeds=neg_pooled)
    return embeds


def _identity_kwargs(engine, inputs: GenerationInputs) -> dict[str, Any]:
    import torch

    if engine.method != "instantid":
        return {}
    if inputs.face_embedding is None or inputs.kps_image is None:
        raise ValueError("InstantID generation needs face_embedding and kps_image")
    engine.pipe.set_ip_adapter_scale(inputs.ip_adapter_scale)
    return {"face_embedding": torch.as_tensor(np.asarray(inputs.face_embedding, dtype=np.float32)),
            "image": inputs.kps_image, "face_region": inputs.face_region, "pose_image": inputs.pose_image,
            "controlnet_conditioning_scale": inputs.controlnet_conditioning_scale}


def generate_images(engine, inputs: GenerationInputs, progress: Progress | None = None) -> GenerationOutput:
    """Run one batched generation; raise IdentityBodyError(job_canceled) when ``progress``
    returns False. A fast engine (worker.engine.fast_mode) runs it as a batch of one job."""
    import torch

    if getattr(engine, "fast", None) is not None:
        return _generate_as_batch(engine, inputs, progress)

    from worker.engine.instantid_pipeline import guidance_applies

    pipe, sync = engine.pipe, _sync_for(engine.policy.device)
    engine.modes.use(inputs.mode)
    guidance_on = guidance_applies(pipe, inputs.guidance)
    generators = [torch.Generator(engine.policy.generator_device()).manual_seed(inputs.seed + i)
                  for i in range(inputs.num_images)]
    t0 = time.perf_counter()
    embeds = _encode(pipe, inputs, guidance_on)
    sync()
    t_encoded = time.perf_counter()
    clock = _StepClock(inputs.steps, progress, sync)
    result = pipe(
        **embeds, **_identity_kwargs(engine, inputs), num_images_per_prompt=inputs.num_images,
        num_inference_steps=inputs.steps, guidance_scale=inputs.guidance, generator=generators,
        width=inputs.width, height=inputs.height, callback_on_step_end=clock, output_type="pil",
    )
    sync()
    t_end = time.perf_counter()
    marks = [t_encoded, *clock.marks]
    return GenerationOutput(images=list(result.images), timings={
        "prompt_encode_s": t_encoded - t0,
        "denoise_step_s": [b - a for a, b in zip(marks, marks[1:])],
        "decode_s": t_end - marks[-1],
        "generate_s": t_end - t0,
    })


def _generate_as_batch(engine, inputs: GenerationInputs, progress: Progress | None) -> GenerationOutput:
    from worker.engine.batch_generation import BatchJob, generate_batch

    (result,) = generate_batch(engine, [BatchJob(inputs, progress)])
    if result.error is not None:
        raise result.error
    return GenerationOutput(images=result.images, timings=result.timings)


# The face-detail stage (worker.engine.face_detail) times, reports and cancels its steps the same way.
StepClock = _StepClock
sync_for = _sync_for
