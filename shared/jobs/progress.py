"""What a running job is doing: its stage, and how long it has left, estimated from the step times
measured on this job. Pure: the worker's progress writer feeds it and stores what it says.

A running job moves through these stages, in order (``face_detail`` only where the engine has a
face-detail pass)::

    analyzing_face ──▶ denoising ──▶ face_detail ──▶ uploading

Example::

    eta = StepEta(total=8, started=9.0)
    eta.step_done(now=10.0)
    eta.seconds_left(1)             # 7.0: seven steps at the 1 s the first one took
    eta.step_done(now=10.5)
    eta.seconds_left(2)             # 3.0: six steps at the 0.5 s measured since
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
    """Seconds left of the denoise loop from the mean of the steps measured so far.

    The first step is timed from ``started``, so it carries prompt encoding and first-call
    warm-up; it counts only until a second step has been measured.
    """

    total: int
    started: float = field(default_factory=time.monotonic)
    marks: list[float] = field(default_factory=list)

    def step_done(self, now: float | None = None) -> None:
        self.marks.append(time.monotonic() if now is None else now)

    def seconds_per_step(self) -> float | None:
        if len(self.marks) >= 2:
            return (self.marks[-1] - self.marks[0]) / (len(self.marks) - 1)
        if len(self.marks) == 1:
            return self.marks[0] - self.started
        return None

    def seconds_left(self, step: int) -> float | None:
        per_step = self.seconds_per_step()
        if per_step is None:
            return None
        return round(max(0, self.total - step) * per_step, 1)
