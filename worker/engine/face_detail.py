"""Stage 4 of a job, the face-detail pass: in a full-body frame the face is ~100 px tall and covers
a few latent cells, so InstantID's identity is weakest exactly where it matters. For the base
images of a job this stage

1. detects the largest face of each image with the already-loaded detector (none -> the image is
   kept as is and its entry says ``face_found: false``);
2. takes a square crop around each face (``face_geometry.square_crop_box``, 1.6x the box) and
   resizes it to the UNet's working size (1024 for SDXL, 128 for the tiny profile), so every
   crop has one size;
3. refines ALL crops in ONE InstantID img2img pass through the one runner
   (worker.engine.denoise_pass; the loaded ``InstantIDPipeline`` itself, given ``image_to_refine``
   and ``strength``: the same IdentityNet rule, no second copy of any weight), each crop a row
   with the INPUT face's embedding and the keypoints of the face DETECTED in it;
4. pastes each result back with a feathered Gaussian mask (``face_geometry.feather_mask``), so
   every pixel outside the feathered region is byte-identical to the base image.

The crop of image i is seeded ``seed + i``, like the base pass, so refining an image alone with
seed s+i gives the image it gets in the batch. The pass runs ``refined_steps(steps, strength)``
denoise steps (diffusers' img2img rule) whatever the number of faces; progress and cancel are the
runner's, as for the base pass. ``plan_face_pass`` / ``FacePass.finish`` split the stage around
its denoise pass, so the pass can share a micro-batch with other jobs' face passes.

Example::

    out = refine_faces(engine, base.images, analyzer.largest_face,
                       FaceDetailInputs(prompt=..., negative_prompt=..., face_embedding=emb, seed=42))
    out.images, [e.as_dict() for e in out.entries]
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
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
    refined_steps,
    run_pass,
)
from worker.engine.face_geometry import (
    Box,
    feather_mask,
    kps_in_crop,
    paste_feathered,
    square_crop_box,
)
from worker.engine.output_size import working_size
from worker.face.keypoints import draw_kps

log = logging.getLogger(__name__)

DEFAULT_STRENGTH = 0.4


@dataclass
class FaceDetailInputs:
    prompt: str
    negative_prompt: str
    face_embedding: np.ndarray                    # the INPUT photo's raw 512-d embedding
    seed: int
    strength: float = DEFAULT_STRENGTH
    mode: str = "fast"
    steps: int = 8                                 # the schedule's length; strength takes its tail
    guidance: float = 0.0
    controlnet_conditioning_scale: float = 0.8
    ip_adapter_scale: float = 0.8
    base: str | None = None                        # the base checkpoint (None: the default)


@dataclass
class FaceDetailEntry:
    """What the pass did to one image (goes into that image's result entry)."""

    face_found: bool
    applied: bool
    crop_box: Box | None = None
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"face_found": self.face_found,
                "face_detail": "applied" if self.applied else "skipped",
                "face_detail_reason": self.reason,
                "face_crop_box": list(self.crop_box) if self.crop_box else None}


@dataclass
class FaceDetailOutput:
    images: list[Image.Image]
    entries: list[FaceDetailEntry]
    timings: dict[str, Any] = field(default_factory=dict)


Detect = Callable[[Image.Image], Any]   # image -> FaceInfo (bbox, kps) or None


def detail_steps(steps: int, strength: float) -> int:
    """Denoise steps the face-detail pass runs (for all of a job's faces at once); 0 means the
    pass has nothing to do."""
    return refined_steps(steps, strength)


@dataclass
class FacePass:
    """A job's face-detail pass, planned: what was found in each image and the crops as rows."""

    images: list[Image.Image]
    entries: list[FaceDetailEntry]
    request: PassRequest
    started: float
    detect_s: float

    def job(self, progress: Progress | None = None, count: StepCount | None = None) -> PassJob:
        return PassJob(self.request, progress, count or StepCount())

    def finish(self, result: JobResult) -> FaceDetailOutput:
        """Paste the refined crops back; raise the pass's error (a cancel included)."""
        if result.error is not None:
            raise result.error
        refined = iter(result.images)
        out_images = [_paste(image, next(refined), entry.crop_box) if entry.applied else image
                      for image, entry in zip(self.images, self.entries)]
        steps = self.request.shape.denoise_steps
        return FaceDetailOutput(images=out_images, entries=self.entries, timings={
            "face_detail_s": time.perf_counter() - self.started, "face_detail_detect_s": self.detect_s,
            "face_detail_steps": steps * self.request.num_images})


def plan_face_pass(engine: DenoiseEngine, images: list[Image.Image], detect: Detect,
                   inputs: FaceDetailInputs) -> FacePass:
    """Detect each image's largest face and make its crop a row of one img2img pass."""
    if engine.method != "instantid":
        raise ValueError(f"the face-detail pass needs the InstantID engine (this one is {engine.method})")
    started = time.perf_counter()
    size = working_size(engine.pipe)
    shape = PassShape(mode=inputs.mode, steps=int(inputs.steps), width=size, height=size,
                      guidance=float(inputs.guidance), strength=float(inputs.strength), base=inputs.base)
    runs = shape.denoise_steps > 0
    entries, rows = [], []
    for i, image in enumerate(images):
        face = detect(image)
        if face is None or not runs:
            entries.append(FaceDetailEntry(face_found=face is not None, applied=False,
                                           reason="no_face" if face is None else "no_steps"))
            continue
        box = square_crop_box(face.bbox, image.size)
        crop = image.crop(box).resize((size, size), Image.LANCZOS)
        rows.append(Row(seed=inputs.seed + i, kps_image=draw_kps(size, size, kps_in_crop(face.kps, box, size)),
                        image_to_refine=crop))
        entries.append(FaceDetailEntry(face_found=True, applied=True, crop_box=box))
    if not all(e.face_found for e in entries):
        log.info("face-detail pass: no face found in image(s) %s; kept unchanged",
                 [i for i, e in enumerate(entries) if not e.face_found])
    request = PassRequest(shape, inputs.prompt, inputs.negative_prompt, rows, face_embedding=inputs.face_embedding,
                          controlnet_conditioning_scale=inputs.controlnet_conditioning_scale,
                          ip_adapter_scale=inputs.ip_adapter_scale)
    return FacePass(images=list(images), entries=entries, request=request, started=started,
                    detect_s=time.perf_counter() - started)


def refine_faces(engine: DenoiseEngine, images: list[Image.Image], detect: Detect, inputs: FaceDetailInputs,
                 progress: Progress | None = None, count: StepCount | None = None) -> FaceDetailOutput:
    """Run the pass over ``images``; ``progress(step, total)`` counts its steps (total =
    ``detail_steps``, or the job's as ``count`` says). Raises IdentityBodyError(job_canceled) when
    it answers False."""
    face_pass = plan_face_pass(engine, images, detect, inputs)
    (result,) = run_pass(engine, [face_pass.job(progress, count)])
    return face_pass.finish(result)


def _paste(image: Image.Image, refined: Image.Image, box: Box) -> Image.Image:
    side = box[2] - box[0]
    patch = np.asarray(refined.convert("RGB").resize((side, side), Image.LANCZOS))
    return Image.fromarray(paste_feathered(np.asarray(image.convert("RGB")), patch, box, feather_mask(side)))
