"""Prometheus metrics of a worker process, served on ``settings.worker_metrics_port``.

- ``idbody_queue_depth{queue}``: tasks waiting in the broker (read at scrape time);
- ``idbody_jobs_running``: jobs this process is generating now;
- ``idbody_step_seconds`` / ``idbody_generation_seconds`` / ``idbody_model_load_seconds``;
- ``idbody_micro_batch_jobs``: how many jobs shared each denoise pass (a micro-batching worker);
- ``idbody_gpu_memory_bytes{kind}``: allocated/reserved CUDA memory, only where torch is already
  loaded and CUDA is present (an io worker never imports torch for this);
- ``idbody_webhook_attempts_total{outcome}``: delivered, retry, rejected, exhausted, refused.
- ``idbody_identity_score``: each returned image's identity score (the judge's cosine, -1..1);
  ``idbody_output_faces_missing_total``: returned images in which no face was found.

Example::

    metrics = WorkerMetrics(redis_client)
    port = metrics.serve(settings.worker_metrics_port)      # in the worker's start hook
    with metrics.generation():
        ...
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from shared.queues import GPU_QUEUE, IO_QUEUE

# kombu's redis transport keeps one list per priority step: "gpu", "gpu\x06\x163", ...
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")


class QueueDepthCollector(Collector):
    def __init__(self, client: Any, queues: tuple[str, ...] = (GPU_QUEUE, IO_QUEUE)) -> None:
        self.client = client
        self.queues = queues

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("idbody_queue_depth", "Tasks waiting in the broker.", labels=["queue"])
        for queue in self.queues:
            family.add_metric([queue], float(sum(self.client.llen(queue + s) for s in _PRIORITY_SUFFIXES)))
        yield family


class GpuMemoryCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        torch = sys.modules.get("torch")  # never import torch just to report on it
        if torch is None or not torch.cuda.is_available():
            return
        family = GaugeMetricFamily("idbody_gpu_memory_bytes", "CUDA memory of this process.", labels=["device", "kind"])
        for index in range(torch.cuda.device_count()):
            family.add_metric([str(index), "allocated"], float(torch.cuda.memory_allocated(index)))
            family.add_metric([str(index), "reserved"], float(torch.cuda.memory_reserved(index)))
        yield family


class WorkerMetrics:
    def __init__(self, redis_client: Any | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs_running = Gauge("idbody_jobs_running", "Jobs this worker is generating now.", registry=r)
        self.step_seconds = Histogram("idbody_step_seconds", "Time of one denoise step.", registry=r,
                                      buckets=(0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10))
        self.generation_seconds = Histogram("idbody_generation_seconds", "Time of one job's generation.",
                                            registry=r, buckets=(0.5, 1, 2, 5, 10, 20, 40, 80, 160, 320, 600))
        self.model_load_seconds = Gauge("idbody_model_load_seconds", "Time the pipeline took to load.", registry=r)
        self.webhook_attempts = Counter("idbody_webhook_attempts", "Webhook delivery attempts by outcome.",
                                        ["outcome"], registry=r)
        self.identity_score = Histogram(
            "idbody_identity_score", "Identity score (the judge's cosine to the upload's face) of each returned image.",
            # the judge is dlib's recognizer (worker.face.judge): strangers score ~0.85 on it
            # (worker.face.identity_score), so the buckets are fine from there up to 1
            registry=r, buckets=(0, 0.2, 0.4, 0.6, 0.7, 0.8, 0.85, 0.88, 0.9, 0.92, 0.94, 0.96, 0.98, 1.0))
        self.faces_missing = Counter("idbody_output_faces_missing", "Returned images in which no face was found.",
                                     registry=r)
        if redis_client is not None:
            r.register(QueueDepthCollector(redis_client))
        r.register(GpuMemoryCollector())
        self.micro_batch_jobs = Histogram(
            "idbody_micro_batch_jobs", "Jobs whose base or face-detail passes shared one denoise pass.", registry=r,
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64))
        self._job = threading.local()  # each job runs on its own thread: its step clock is its own

    @contextmanager
    def generation(self) -> Iterator[None]:
        """Count a running job and time it."""
        self.jobs_running.inc()
        started = time.perf_counter()
        self._job.last_step = started
        try:
            yield
        finally:
            self.generation_seconds.observe(time.perf_counter() - started)
            self.jobs_running.dec()
            self._job.last_step = None

    def step_done(self) -> None:
        """Call from the step callback: observes the time since this job's previous step."""
        now = time.perf_counter()
        last = getattr(self._job, "last_step", None)
        if last is not None:
            self.step_seconds.observe(now - last)
        self._job.last_step = now

    def micro_batch_pass(self, jobs: int, images: int) -> None:
        """One denoise pass of a micro-batching worker and how many jobs shared it."""
        self.micro_batch_jobs.observe(jobs)

    def identity_scored(self, score: float | None) -> None:
        """One returned image: its score, or None when no face was found in it."""
        if score is None:
            self.faces_missing.inc()
        else:
            self.identity_score.observe(score)

    def webhook_outcome(self, outcome: Any) -> None:
        if outcome is not None:
            self.webhook_attempts.labels(str(getattr(outcome, "value", outcome))).inc()

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Start the /metrics HTTP server in a daemon thread; returns the bound port (0: any free one)."""
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        return int(server.server_port)


@lru_cache(maxsize=1)
def process_metrics() -> WorkerMetrics:
    """This worker process's metrics (one registry per process, shared by its tasks)."""
    import redis

    from shared.settings import get_settings

    return WorkerMetrics(redis.Redis.from_url(get_settings().redis_url))
