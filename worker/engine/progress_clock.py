"""Per-step progress and timings of a batched denoise pass, without stalling the GPU.

``callback_on_step_end`` runs on the CPU when a step has been *queued*, not when the GPU has
finished it. The plain path synchronises the device after every step to know; that empties the
GPU's queue each step, so the next step's launches start from idle. Here each step records a
CUDA event instead, and a step is reported once its event has completed (``Event.query()``,
which does not block). The CPU is allowed to run at most ``max_ahead`` steps ahead of the GPU:
beyond that it waits on the oldest pending event, which bounds how late a cancel is seen while
the GPU always has work queued. On the CPU there is nothing to wait for: each step is reported
at once.

Example::

    clock = BatchClock(jobs, steps, "cuda", on_all_stopped=StopError)
    clock.encoded()                 # after prompt encoding
    pipe(..., callback_on_step_end=clock)
    timings = clock.finish()        # reports the remaining steps; per-step seconds from events
"""

from __future__ import annotations

import itertools
import time
from typing import Any


class BatchClock:
    def __init__(self, jobs, total: int, device: str, on_all_stopped: type[Exception], max_ahead: int = 2) -> None:
        self.jobs, self.total, self.on_all_stopped, self.max_ahead = jobs, total, on_all_stopped, max_ahead
        self.cuda = device == "cuda"
        self.started = time.perf_counter()
        self.marks: list[Any] = []       # CUDA events, or perf_counter seconds on the CPU
        self.reported = 0

    def _mark(self) -> Any:
        if not self.cuda:
            return time.perf_counter()
        import torch

        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def encoded(self) -> None:
        self.encoded_at = time.perf_counter()
        self.marks.append(self._mark())

    def __call__(self, pipe, step: int, _timestep, callback_kwargs: dict) -> dict:
        self.marks.append(self._mark())
        self._report(wait=False)
        if not any(job.live for job in self.jobs):
            pipe._interrupt = True
            raise self.on_all_stopped(f"every job of the pass stopped by step {step + 1}")
        return callback_kwargs

    def _report(self, wait: bool) -> None:
        """Tell each live job about every step the device has finished."""
        while self.reported < len(self.marks) - 1:
            pending = self.marks[self.reported + 1]
            if self.cuda and not pending.query():
                too_far = len(self.marks) - 1 - self.reported > self.max_ahead
                if not (wait or too_far):
                    return
                pending.synchronize()
            self.reported += 1
            for job in self.jobs:
                job.tell(self.reported, self.total)

    def _seconds(self, a: Any, b: Any) -> float:
        return a.elapsed_time(b) / 1000 if self.cuda else b - a

    def finish(self) -> dict[str, Any]:
        """After the pipeline returned: report the remaining steps; the pass's stage timings."""
        end = self._mark()
        if self.cuda:
            end.synchronize()
        self._report(wait=True)
        steps = self.marks
        return {
            "prompt_encode_s": self.encoded_at - self.started,
            "denoise_step_s": [self._seconds(a, b) for a, b in itertools.pairwise(steps)],
            "decode_s": self._seconds(steps[-1], end),
            "generate_s": time.perf_counter() - self.started,
        }
