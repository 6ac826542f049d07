"""Stage 4 of a job, the face-detail pass: in a full-body frame the face is ~100 px tall and covers
a few latent cells, so InstantID's identity is weakest exactly where it matters. For each base
image this stage

1. detects the largest face with the already-loaded detector (none → the image is kept as is
   and its entry says ``face_found: false``);
2. takes a square crop around it (``face_geometry.square_crop_box``, 1.6× the box) and resizes it
   to the UNet's working size (1024 for SDXL, 128 for the tiny profile);
3. runs InstantID img2img on the crop (the loaded ``InstantIDPipeline`` itself, given
   ``image_to_refine`` and ``strength``: the same IdentityNet rule, no second copy of any weight)
   with the INPUT face's embedding and the keypoints of the face DETECTED in the crop;
4. pastes the result back with a feathered Gaussian mask (``face_geometry.feather_mask``), so
   every pixel outside the feathered region is byte-identical to the base image.

Image i uses a generator seeded ``seed + i``, like the base pass. Each image adds
``detail_steps(steps, strength)`` denoise steps (diffusers' img2img rule); they are counted into
progress, and a False answer from ``progress`` cancels between any two of them.

Example::

    out = refine_faces(engine, base.images, analyzer.largest_face,
                       FaceDetailInputs(prompt=..., negative_prompt=..., face_embedding=emb, seed=42))
    out.images, [e.as_dict() for e in out.entries]
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from PIL import Image

from worker.engine.face_geometry import (
    Box,
    feather_mask,
    kps_in_crop,
    paste_feathered,
    square_crop_box,
)
from worker.engine.generation import (
    Progress,
    StepClock,
    encode_prompt_pair,
    stage_progress,
    sync_for,
)
from worker.engine.output_size import working_size

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
    """Denoise steps an img2img call runs: diffusers' own rule (the last int(steps·strength) of
    the schedule). 0 means the pass has nothing to do."""
    return min(int(steps * strength), steps)


def refine_faces(engine, images: list[Image.Image], detect: Detect, inputs: FaceDetailInputs,
                 progress: Progress | None = None) -> FaceDetailOutput:
    """Run the pass over ``images``; ``progress(step, total)`` counts this stage's steps
    (total = len(images) × detail_steps). Raises IdentityBodyError(job_canceled) when it
    answers False."""
    if engine.method != "instantid":
        raise ValueError(f"the face-detail pass needs the InstantID engine (this one is {engine.method})")
    n = detail_steps(inputs.steps, inputs.strength)
    total = n * len(images)
    started = time.perf_counter()
    t_detect = 0.0
    encoded = None
    out_images, entries = [], []
    for i, image in enumerate(images):
        t = time.perf_counter()
        face = detect(image)
        t_detect += time.perf_counter() - t
        if face is None or n == 0:
            entries.append(FaceDetailEntry(face_found=face is not None, applied=False,
                                           reason="no_face" if face is None else "no_steps"))
            out_images.append(image)
            _count_skipped(progress, (i + 1) * n, total)
            continue
        if encoded is None:
            encoded = _prepare(engine, inputs)
        clock = StepClock(n, stage_progress(progress, i * n, total), sync_for(engine.policy.device))
        refined, box = _refine_one(engine, image, face, inputs, inputs.seed + i, encoded, clock)
        out_images.append(refined)
        entries.append(FaceDetailEntry(face_found=True, applied=True, crop_box=box))
    if not all(e.face_found for e in entries):
        log.info("face-detail pass: no face found in image(s) %s; kept unchanged",
                 [i for i, e in enumerate(entries) if not e.face_found])
    return FaceDetailOutput(images=out_images, entries=entries, timings={
        "face_detail_s": time.perf_counter() - started, "face_detail_detect_s": t_detect,
        "face_detail_steps": n * sum(e.applied for e in entries)})


def _count_skipped(progress: Progress | None, done: int, total: int) -> None:
    """A skipped image's steps still count, so progress ends at its total; a cancel between
    images is honoured here too."""
    from shared.errors import ErrorCode, IdentityBodyError

    if progress is not None and total and progress(done, total) is False:
        raise IdentityBodyError(ErrorCode.JOB_CANCELED, f"Generation was canceled in the face-detail pass "
                                f"at step {done} of {total}.")


def _prepare(engine, inputs: FaceDetailInputs) -> dict[str, Any]:
    """Mode, scheduler and prompt embeddings, once for all images of the call."""
    from worker.engine.instantid_pipeline import guidance_applies

    engine.modes.use(inputs.mode)
    engine.pipe.set_ip_adapter_scale(inputs.ip_adapter_scale)
    guidance = guidance_applies(engine.pipe, inputs.guidance)
    return encode_prompt_pair(engine.pipe, inputs.prompt, inputs.negative_prompt, guidance)


def _refine_one(engine, image: Image.Image, face, inputs: FaceDetailInputs, seed: int,
                encoded: dict[str, Any], clock: StepClock) -> tuple[Image.Image, Box]:
    import torch

    from worker.face.keypoints import draw_kps

    size = working_size(engine.pipe)
    box = square_crop_box(face.bbox, image.size)
    side = box[2] - box[0]
    crop = image.crop(box).resize((size, size), Image.LANCZOS)
    control = draw_kps(size, size, kps_in_crop(face.kps, box, size))
    generator = torch.Generator(engine.policy.generator_device()).manual_seed(seed)
    result = engine.pipe(
        **encoded, image=control, image_to_refine=crop, strength=inputs.strength,
        face_embedding=torch.as_tensor(np.asarray(inputs.face_embedding, dtype=np.float32)),
        num_inference_steps=inputs.steps, guidance_scale=inputs.guidance, generator=generator,
        controlnet_conditioning_scale=inputs.controlnet_conditioning_scale, width=size, height=size,
        callback_on_step_end=clock, output_type="pil")
    patch = np.asarray(result.images[0].convert("RGB").resize((side, side), Image.LANCZOS))
    pasted = paste_feathered(np.asarray(image.convert("RGB")), patch, box, feather_mask(side))
    return Image.fromarray(pasted), box
