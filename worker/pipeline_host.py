"""The pipeline a worker process keeps resident: loaded once by the worker start hook, warmed up, then
shared by every task that process runs. Its lifecycle is explicit: ``load`` once, ``current`` after.

Example::

    host = PipelineHost.load(settings)      # in the worker start hook
    host.pipeline.generate(face, **params)  # in a task, via PipelineHost.current()
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from shared.settings import Settings
from worker.profile_choice import ProfileChoice, choose_profile

log = logging.getLogger(__name__)

_lock = threading.Lock()
_current: "PipelineHost | None" = None


@dataclass
class PipelineHost:
    pipeline: Any
    choice: ProfileChoice
    device: str
    loaded_at: float
    load_s: float
    warmup_s: float
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")

    def info(self) -> dict[str, Any]:
        """What the heartbeat publishes: enough for /readyz and an operator, nothing secret."""
        return {
            "worker_id": self.worker_id,
            "pipeline_loaded": True,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "profile": self.choice.profile,
            "method": "instantid",
            "device": self.device,
            "loaded_at": self.loaded_at,
            "load_s": round(self.load_s, 3),
            "warmup_s": round(self.warmup_s, 3),
        }

    @classmethod
    def load(cls, settings: Settings) -> "PipelineHost":
        """Load (once per process) and warm up the pipeline for the profile ``settings`` resolves to."""
        global _current
        with _lock:
            if _current is not None:
                return _current
            choice = choose_profile(settings)
            log.info("worker profile: %s (%s)", choice.profile, choice.reason)
            started = time.perf_counter()
            pipeline = _build_pipeline(settings, choice)
            pipeline.load_models()
            loaded = time.perf_counter()
            _warm_up(pipeline)
            warm = time.perf_counter()
            _current = cls(
                pipeline=pipeline,
                choice=choice,
                device=str(getattr(pipeline, "device", settings.device)),
                loaded_at=time.time(),
                load_s=loaded - started,
                warmup_s=warm - loaded,
            )
            log.info("pipeline loaded in %.1fs, warmed up in %.1fs", _current.load_s, _current.warmup_s)
            return _current

    @staticmethod
    def current() -> "PipelineHost":
        if _current is None:
            raise RuntimeError("the pipeline is not loaded in this process; the worker start hook loads it")
        return _current


def _build_pipeline(settings: Settings, choice: ProfileChoice) -> Any:
    from worker.identity_pipeline import IdentityPipeline

    if choice.profile == "tiny":
        from worker.engine.tiny import build_tiny_model_dir

        build_tiny_model_dir(settings.tiny_model_dir)
    return IdentityPipeline(settings.model_copy(update={"model_profile": choice.profile}))


def _warm_up(pipeline: Any) -> None:
    """One small generation so the first real job does not pay for lazy initialisation."""
    warm_up = getattr(pipeline, "warm_up", None)
    if callable(warm_up):
        warm_up()
