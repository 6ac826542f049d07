"""Text-to-image generation on a loaded Engine: a job's ``GenerationInputs`` as rows of one denoise
pass (worker.engine.denoise_pass, the one runner), alone or with other jobs of its shape.

All ``num_images`` images of a job come out of ONE denoise pass; image i has its own CPU generator
seeded ``seed + i``, so generating with seed s+i and num_images=1 reproduces image i alone, and a
job batched with others gets the images it gets alone.

This is stage 3 of a job (worker.identity_pipeline numbers them); stage 4, the face-detail pass,
is worker.engine.face_detail, which runs its crops through the same runner.

Example::

    out = generate_images(engine, GenerationInputs(prompt="...", negative_prompt="...",
                          face_embedding=face.embedding, kps_image=kps, seed=42, num_images=4))
    out.images, out.timings["denoise_step_s"]
    results = generate_batch(engine, [BatchJob(inputs_a, progress_a), BatchJob(inputs_b)])
    results[0].images, results[1].error
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from worker.engine.denoise_pass import (
    DenoiseEngine,
    JobResult,
    PassJob,
    PassRequest,
    PassShape,
    Progress,
    Row,
    StepCount,
    run_pass,
)


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
    base: str | None = None                       # the base checkpoint (None: the default)

    @property
    def shape(self) -> PassShape:
        """Jobs of equal shapes share one denoise pass (a pass has the pose ControlNet in it or not)."""
        return PassShape(mode=self.mode, steps=int(self.steps), width=int(self.width), height=int(self.height),
                         guidance=float(self.guidance), pose=self.pose_image is not None, base=self.base)

    def request(self) -> PassRequest:
        """Image i is a row seeded ``seed + i``."""
        rows = [Row(seed=self.seed + i, kps_image=self.kps_image, pose_image=self.pose_image)
                for i in range(self.num_images)]
        return PassRequest(self.shape, self.prompt, self.negative_prompt, rows, face_embedding=self.face_embedding,
                           face_region=self.face_region,
                           controlnet_conditioning_scale=self.controlnet_conditioning_scale,
                           ip_adapter_scale=self.ip_adapter_scale)


@dataclass
class GenerationOutput:
    images: list[Image.Image]
    timings: dict[str, Any] = field(default_factory=dict)


@dataclass
class BatchJob:
    inputs: GenerationInputs
    progress: Progress | None = None
    count: StepCount = field(default_factory=StepCount)

    def pass_job(self) -> PassJob:
        return PassJob(self.inputs.request(), self.progress, self.count)


def generate_batch(engine: DenoiseEngine, jobs: list[BatchJob]) -> list[JobResult]:
    """Run ``jobs`` (one shape) in one denoise pass; one JobResult per job, in order, each with its
    images or its error. Never raises for a job's own failure."""
    return run_pass(engine, [job.pass_job() for job in jobs])


def generate_images(engine: DenoiseEngine, inputs: GenerationInputs, progress: Progress | None = None,
                    count: StepCount | None = None) -> GenerationOutput:
    """Run one job as a pass of its own; raise its error (IdentityBodyError(job_canceled) when
    ``progress`` answers False)."""
    (result,) = generate_batch(engine, [BatchJob(inputs, progress, count or StepCount())])
    if result.error is not None:
        raise result.error
    return GenerationOutput(images=result.images, timings=result.timings)
