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
    method: str
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
            "method": self.method,
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
            _warm_up(pipeline, settings)
            warm = time.perf_counter()
            _current = cls(
                pipeline=pipeline,
                choice=choice,
                method=str(pipeline.method),
                device=_device_of(pipeline, settings.device),
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

    # the decision is taken once (choose_profile); the pipeline gets the concrete profile (and
    # builds the tiny folder itself when that is the profile)
    return IdentityPipeline(settings.model_copy(update={"model_profile": choice.profile}))


def _device_of(pipeline: Any, default: str) -> str:
    policy = getattr(getattr(pipeline, "engine", None), "policy", None)
    return str(getattr(policy, "device", default))


def _warm_up(pipeline: Any, settings: Settings) -> None:
    """Run each stage once so the first real job does not pay for lazy initialisation (ONNX
    sessions, CUDA kernels and allocator, scheduler tables): the face analyzer on a blank image,
    then one 1-step 64x64 generation with a random identity. A compiled (fast) engine instead
    compiles and records its CUDA graphs here, at the default output size, for the batch sizes it
    will see most (others record on first use: a replay's cost, not a compile's)."""
    import numpy as np
    from PIL import Image

    from shared.errors import IdentityBodyError
    from worker.engine.generation import GenerationInputs, generate_images
    from worker.keypoints import draw_kps

    try:
        pipeline.face_analyzer.analyze(Image.new("RGB", (256, 256), (128, 128, 128)))
    except IdentityBodyError:
        pass  # "no face" is the expected answer for a blank image
    rng = np.random.default_rng(0)
    embedding = rng.standard_normal(512).astype(np.float32)
    kps = np.array([[22, 24], [42, 24], [32, 34], [24, 44], [40, 44]], dtype=np.float32)
    fast = getattr(pipeline.engine, "fast", None)
    if fast is not None and fast.compiled:
        from shared.params import GenerationParams
        from worker.engine.fast_mode import warm_up

        size = GenerationParams.model_fields
        rows = tuple(sorted({2, min(4, settings.max_batch_images), settings.max_batch_images}))
        warm_up(pipeline.engine, size["width"].default, size["height"].default, rows=rows)
        return
    inputs = GenerationInputs(prompt="a person standing", negative_prompt="", seed=0, face_embedding=embedding,
                              kps_image=draw_kps(64, 64, kps), num_images=1, width=64, height=64, steps=1)
    generate_images(pipeline.engine, inputs)
