"""What a running job is doing: its stage, and how long it has left, estimated from the step times
measured on this job. Pure: the worker's progress writer feeds it and stores what it says.

A running job moves through these stages, in order (``face_detail`` only where the engine has a
face-detail pass)::

    analyzing_face ──▶ denoising ──▶ face_detail ──▶ uploading

Example::

    eta = StepEta(total=8)
    eta.step_done(1, now=12.0)      # the first step: warm-up of a new size, no estimate from it
    eta.seconds_left(1)             # None
    eta.step_done(2, now=12.5)
    eta.seconds_left(2)             # 3.0: six steps at the 0.5 s measured since the first
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum


class JobStage(StrEnum):
    ANALYZING_FACE = "analyzing_face"
    DENOISING = "denoising"
    FACE_DETAIL = "face_detail"
    UPLOADING = "uploading"


@dataclass
class StepEta:
    """Seconds left of a running job: its steps left (denoise and face-detail, the progress
    total) at the step time measured on this job, or, where this worker finished a job of the
    same total before, that job's time left from the same step, scaled by how fast this job's
    steps run against its: VAE decoding, face detection and the face-detail pass sit between the
    steps, so the steps alone miss them.

    The first step is left out of the step time: it carries the first call at a new image size
    (measured on the tiny profile, 256 px, after the worker's warm-up: 4.5 s against 0.2 s for
    each step after it), so an estimate from it alone read several times the real time left.
    """

    total: int
    marks: dict[int, float] = field(default_factory=dict)  # step -> when it was reported done
    previous: StepEta | None = None  # this worker's last finished job of the same total
    ended: float | None = None

    def step_done(self, step: int, now: float | None = None) -> None:
        self.marks[step] = time.monotonic() if now is None else now

    def end(self, now: float | None = None) -> None:
        """The job's steps and what follows them are done (its images are being stored)."""
        self.ended = time.monotonic() if now is None else now

    def seconds_per_step(self) -> float | None:
        if len(self.marks) < 2:
            return None
        first, last = min(self.marks), max(self.marks)
        return (self.marks[last] - self.marks[first]) / (last - first)

    def seconds_left(self, step: int) -> float | None:
        per_step = self.seconds_per_step()
        if per_step is None:
            return None
        before = self.previous
        before_per_step = before.seconds_per_step() if before is not None else None
        if before is not None and before.ended is not None and before_per_step and step in before.marks:
            left = (before.ended - before.marks[step]) * per_step / before_per_step
        else:
            left = max(0, self.total - step) * per_step
        return round(max(0.0, left), 1)
