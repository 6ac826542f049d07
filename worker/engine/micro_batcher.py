"""Micro-batching across requests: the denoise passes of jobs that run at the same time in one
worker (base generations, and face-detail passes), gathered into one pass when they share a
``PassShape`` (worker.engine.denoise_pass): never two sizes, modes or base checkpoints in one pass.

How a GPU worker gets several jobs at once, and why this way: the gpu worker runs Celery's
``threads`` pool with ``max_batch_images`` threads and prefetch 1, so Celery itself reserves up to
that many messages and runs each job's task in its own thread, with its own record, progress,
cancel, late ack and redelivery — nothing about a job's life changes. Each thread analyses its
face, then hands its base generation (and later its face-detail pass) to the process's one
``MicroBatcher`` and waits; the batcher's thread runs the passes, one at a time, on the one resident engine. We chose this over
``celery-batches`` (whose batch task acks and fails messages as a group and has no per-message
progress or cancel) and over a kombu consumer of our own (which would re-implement Celery's
reservation, ack and redelivery that the job records already rely on).

The rule: the oldest waiting job waits at most ``window_s`` for company; its pass takes, in
arrival order, every waiting job of its shape that still fits into ``max_images`` images (the
first job always runs, however many images it has). Jobs that arrive while a pass runs wait for
the next one, which starts at once if its oldest job has already waited its window.

Example::

    batcher = MicroBatcher(lambda jobs: run_pass(engine, jobs), max_images=8, window_s=0.05)
    result = batcher.submit(PassJob(inputs.request(), progress))   # blocks until its pass ran
    result.images, result.error
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from worker.engine.denoise_pass import JobResult, PassJob

log = logging.getLogger(__name__)

RunPass = Callable[[list[PassJob]], list[JobResult]]


def micro_batch_slots(settings, device: str) -> int:
    """How many jobs a gpu worker runs at once: ``max_batch_images`` when micro-batching applies
    (asked for, and the fast engine is on — only it gives each row its own scales), else 1. The
    worker's pool and its pipeline both read this, so they never disagree."""
    fast = settings.engine_fast == "on" or (settings.engine_fast == "auto" and device == "cuda")
    if settings.micro_batching and fast and settings.max_batch_images > 1:
        return int(settings.max_batch_images)
    return 1


@dataclass
class _Waiting:
    job: PassJob
    key: Hashable
    arrived: float
    done: threading.Event = field(default_factory=threading.Event)
    result: JobResult | None = None

    @property
    def images(self) -> int:
        return self.job.request.num_images


class MicroBatcher:
    """Gathers concurrent callers' jobs into passes run by ``run`` on one thread of its own."""

    def __init__(self, run: RunPass, max_images: int, window_s: float,
                 on_pass: Callable[[int, int], None] | None = None) -> None:
        self.run, self.max_images, self.window_s = run, int(max_images), float(window_s)
        self.on_pass = on_pass            # (jobs, images) of every pass, for the worker's metrics
        self._waiting: list[_Waiting] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False

    def submit(self, job: PassJob) -> JobResult:
        """Queue ``job`` for the next pass of its shape and wait for its result."""
        waiting = _Waiting(job, job.request.shape, time.monotonic())
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._closing = False
                self._thread = threading.Thread(target=self._serve, name="idbody-micro-batcher", daemon=True)
                self._thread.start()
            self._waiting.append(waiting)
            self._cond.notify_all()
        waiting.done.wait()
        assert waiting.result is not None
        return waiting.result

    def close(self) -> None:
        """Stop the batcher's thread once the waiting jobs have run (a later ``submit`` starts it
        again). A thread that has run torch on the CPU keeps its OpenMP team, which slows the
        other threads' CPU work (measured: 0.16 -> 0.28 s per tiny generation), so it does not
        outlive its use."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _serve(self) -> None:
        while True:
            group = self._next_pass()
            if not group:
                return
            jobs = [w.job for w in group]
            log.info("denoise pass: %d jobs, %d images", len(group), sum(w.images for w in group),
                     extra={"event": "engine.micro_batch", "jobs": len(group)})
            try:
                results = self.run(jobs)
            except BaseException as exc:  # noqa: BLE001 - run_pass isolates jobs; this is a last guard
                results = [JobResult(error=exc) for _ in group]
            if self.on_pass is not None:
                self.on_pass(len(group), sum(w.images for w in group))
            for waiting, result in zip(group, results):
                waiting.result = result
                waiting.done.set()

    def _next_pass(self) -> list[_Waiting]:
        with self._cond:
            while not self._waiting:
                if self._closing:
                    self._thread = None
                    return []
                self._cond.wait()
            oldest = self._waiting[0]
            while True:
                group = self._fitting(oldest.key)
                left = oldest.arrived + self.window_s - time.monotonic()
                if left <= 0 or sum(w.images for w in group) >= self.max_images:
                    break
                self._cond.wait(left)
            for waiting in group:
                self._waiting.remove(waiting)
            return group

    def _fitting(self, key: Hashable) -> list[_Waiting]:
        group, images = [], 0
        for waiting in self._waiting:
            if waiting.key == key and (not group or images + waiting.images <= self.max_images):
                group.append(waiting)
                images += waiting.images
        return group
