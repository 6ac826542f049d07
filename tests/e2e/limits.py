"""Time limits for the end-to-end stacks, derived from the tiny profile's measured speed on this
machine right now, so a loaded machine gets longer limits instead of failed jobs.

A SIGKILLed worker's job comes back after the broker's visibility timeout; that timeout must stay
above the task's hard limit, which must stay above the longest job the tests run. So all three
follow the slowest job the tests submit (12 steps at 128 px, plus the face-detail pass's
int(12 × 0.4) steps when it finds a face), measured in-process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from tests.pipeline_inputs import inputs
from worker.engine.face_detail import DEFAULT_STRENGTH, detail_steps
from worker.engine.generation import generate_images

SLOWEST_JOB_STEPS = 12 + detail_steps(12, DEFAULT_STRENGTH)
HEADROOM = 6.0       # a worker process runs beside the test, the gateway and the servers
FLOOR_S = 60         # below this the fixed costs dominate: dlib face analysis, the face-detail pass and
                     # identity score per image, uploads; a CI-like run took 30 s for one 12-step job


@dataclass(frozen=True)
class StackLimits:
    step_s: float
    soft_s: int
    hard_s: int
    visibility_s: int

    def settings(self) -> dict[str, int]:
        return {"task_soft_time_limit_s": self.soft_s, "task_time_limit_s": self.hard_s,
                "broker_visibility_timeout_s": self.visibility_s}

    def redelivered_within_s(self) -> float:
        """How long a killed worker's job may take to finish: the visibility timeout, the kombu
        restore interval, and one more run of the job."""
        return self.visibility_s + 10 + self.soft_s

    def describe(self) -> str:
        return (f"measured tiny step {self.step_s:.3f}s at 128 px -> soft {self.soft_s}s, hard {self.hard_s}s, "
                f"visibility {self.visibility_s}s")


def measure_limits(tiny_engine) -> StackLimits:
    run = inputs(num_images=1, steps=2)
    generate_images(tiny_engine, run)  # warm-up
    started = time.perf_counter()
    out = generate_images(tiny_engine, run)
    step_s = max(out.timings["denoise_step_s"] + [(time.perf_counter() - started) / 4])
    soft = int(max(FLOOR_S, SLOWEST_JOB_STEPS * step_s * HEADROOM + 10))
    return StackLimits(step_s=step_s, soft_s=soft, hard_s=soft + 1, visibility_s=soft + 4)
