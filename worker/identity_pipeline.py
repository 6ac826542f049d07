"""The seed's Python API: one resident identity pipeline per process.

Example::

    from worker.identity_pipeline import get_identity_pipeline

    pipeline = get_identity_pipeline()
    pipeline.load_models()
    result = pipeline(face_image=Image.open("me.jpg"),
                      body_params={"body_type": "athletic", "height_cm": 170, "weight_kg": 65,
                                   "gender": "female"}, num_images=4)
    result["images"], result["method"], result["note"], result["timings"]
    pipeline.generate(face_image=face, params=GenerationParams(body_type="slim", num_images=2))
    pipeline.pipe.enable_vae_tiling()       # the diffusers pipeline itself

The same object is what a GPU worker keeps resident: ``get_identity_pipeline()`` is the one
instance per process, ``load_models()`` decides the profile once (``choose_profile``) and loads,
``warm_up()`` runs each stage once before the worker publishes readiness, ``info()`` is what the
worker's heartbeat publishes.

The result's ``analysis`` dict::

    {"face": {"bbox": [x1, y1, x2, y2], "det_score": 0.9, "face_count": 1, "image_size": [w, h]},
     "appearance": {"status": "ok" | "skipped" | "failed", "reason": "..." (unless ok), ...fields},
     "skin_tone": ..., "ethnicity": ..., ...}     # appearance fields, flat, when status is ok

Appearance fields only fill what the caller left empty (shared.params / worker.engine.prompts).
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable

from PIL import Image

from shared.params import GenerationParams, parse_params
from shared.settings import Settings, get_settings

log = logging.getLogger(__name__)

Progress = Callable[[int, int], "bool | None"]


class IdentityPipeline:
    """Face photo + body parameters -> full-body images keeping the face's identity."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.engine = None
        self.face_analyzer = None
        self.appearance_analyzer = None     # optional: .submit(pil) -> Future[dict]
        self.choice = None                  # worker.models.profile.ProfileChoice, decided once
        self.load_s: float | None = None
        self.warmup_s: float | None = None
        self.loaded_at: float | None = None
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self._lock = threading.Lock()
        self._run_lock = threading.Lock()   # one generation at a time: a diffusers pipeline is stateful

    # --- lifecycle ---------------------------------------------------------------------
    def load_models(self) -> "IdentityPipeline":
        """Decide the profile (once), load the engine and the face analyzer; later calls return at once."""
        with self._lock:
            if self.engine is not None:
                return self
            from worker.engine.devices import DevicePolicy
            from worker.engine.loading import load_engine
            from worker.face.analysis import FaceAnalyzer
            from worker.models.profile import choose_profile

            started = time.perf_counter()
            self.choice = choose_profile(self.settings)
            log.info("model profile: %s (%s)", self.choice.profile, self.choice.reason)
            model_dir = self._model_dir()
            analyzer = FaceAnalyzer(model_dir, providers=self.settings.onnx_providers,
                                    det_size=(640, 640), min_face_px=self.settings.min_face_px)
            analyzer.load()
            self.engine = load_engine(model_dir, DevicePolicy.decide(self.settings))
            self.face_analyzer = analyzer
            if self.appearance_analyzer is None and self.settings.gemini_api_key is not None:
                from worker.appearance.analyzer import AppearanceAnalyzer

                self.appearance_analyzer = AppearanceAnalyzer.from_settings(self.settings)
            self.load_s, self.loaded_at = time.perf_counter() - started, time.time()
            log.info("pipeline loaded in %.1fs", self.load_s)
        return self

    def _model_dir(self) -> Path:
        if self.choice.profile == "tiny":
            from worker.tiny.model_dir import build_tiny_model_dir

            return build_tiny_model_dir(Path(self.choice.model_dir))
        return Path(self.choice.model_dir)

    def warm_up(self) -> "IdentityPipeline":
        """Run each stage once so the first real job does not pay for lazy initialisation (ONNX
        sessions, CUDA kernels and allocator, scheduler tables): the face analyzer on a blank
        image, then one 1-step 64x64 generation with a random identity."""
        import numpy as np

        from shared.errors import IdentityBodyError
        from worker.engine.generation import GenerationInputs, generate_images
        from worker.face.keypoints import draw_kps

        self.load_models()
        started = time.perf_counter()
        try:
            self.face_analyzer.analyze(Image.new("RGB", (256, 256), (128, 128, 128)))
        except IdentityBodyError:
            pass  # "no face" is the expected answer for a blank image
        embedding = np.random.default_rng(0).standard_normal(512).astype(np.float32)
        kps = np.array([[22, 24], [42, 24], [32, 34], [24, 44], [40, 44]], dtype=np.float32)
        inputs = GenerationInputs(prompt="a person standing", negative_prompt="", seed=0, face_embedding=embedding,
                                  kps_image=draw_kps(64, 64, kps), num_images=1, width=64, height=64, steps=1)
        with self._run_lock:
            generate_images(self.engine, inputs)
        self.warmup_s = time.perf_counter() - started
        log.info("pipeline warmed up in %.1fs", self.warmup_s)
        return self

    def info(self) -> dict[str, Any]:
        """What a worker's heartbeat publishes: enough for /readyz and an operator, nothing secret."""
        return {
            "worker_id": self.worker_id, "pipeline_loaded": self.engine is not None,
            "hostname": socket.gethostname(), "pid": os.getpid(),
            "profile": self.profile, "method": self.engine.method if self.engine else None,
            "device": self.engine.policy.device if self.engine else self.settings.device,
            "loaded_at": self.loaded_at, "load_s": round(self.load_s or 0.0, 3),
            "warmup_s": round(self.warmup_s or 0.0, 3),
        }

    @property
    def profile(self) -> str | None:
        return self.choice.profile if self.choice else None

    @property
    def pipe(self):
        """The diffusers pipeline (loads the models on first use)."""
        return self.load_models().engine.pipe

    @property
    def method(self) -> str:
        return self.load_models().engine.method

    # --- the seed's calls --------------------------------------------------------------
    def __call__(self, face_image: Image.Image, body_params: dict[str, Any] | None = None,
                 num_images: int = 4, **overrides: Any) -> dict[str, Any]:
        return self.generate(face_image, **(body_params or {}), num_images=num_images, **overrides)

    def generate(self, face_image: Image.Image, params: GenerationParams | None = None, *,
                 progress: Progress | None = None, **fields: Any) -> dict[str, Any]:
        """Validate the parameters (``shared.params``: the same model as the HTTP form and the
        task payload; pass one, or its fields as keywords), analyse the face, generate.

        ``progress(step, total)`` is called after every denoise step; returning False stops the
        run with IdentityBodyError(job_canceled).
        """
        if params is None:
            params = parse_params({k: v for k, v in fields.items() if v is not None})
        elif fields:
            params = parse_params({**params.model_dump(exclude_none=True), **fields})
        return self._generate(face_image, params, progress)

    def _generate(self, face_image: Image.Image, params: GenerationParams,
                  progress: Progress | None) -> dict[str, Any]:
        from worker.appearance.analyzer import start_analysis, wait_for_analysis
        from worker.engine.generation import GenerationInputs, generate_images
        from worker.engine.prompts import build_prompt
        from worker.face.keypoints import draw_kps, retarget_kps

        self.load_models()
        started = time.perf_counter()
        timings: dict[str, Any] = {}
        # submitted before face analysis so both run at the same time
        pending = start_analysis(self.appearance_analyzer, face_image, params.use_gemini_analysis)
        t = time.perf_counter()
        face = self.face_analyzer.analyze(face_image)
        timings["face_analysis_s"] = time.perf_counter() - t
        analysis = {"face": _face_summary(face), **_appearance_fields(
            wait_for_analysis(pending, self.settings.gemini_timeout_s))}
        timings["appearance_wait_s"] = time.perf_counter() - t - timings["face_analysis_s"]
        prompt = build_prompt(params.body_params(), analysis)
        kps = retarget_kps(face.kps, params.width, params.height, params.pose)
        seed = params.seed if params.seed is not None else random.randint(0, 2**32 - 1 - params.num_images)
        inputs = GenerationInputs(
            prompt=prompt.positive, negative_prompt=prompt.negative, seed=seed,
            face_embedding=face.embedding, kps_image=draw_kps(params.width, params.height, kps),
            num_images=params.num_images, width=params.width, height=params.height, mode=params.mode,
            steps=params.steps(), guidance=params.guidance(),
            controlnet_conditioning_scale=params.controlnet_conditioning_scale,
            ip_adapter_scale=params.ip_adapter_scale)
        with self._run_lock:
            out = generate_images(self.engine, inputs, progress=progress)
        timings.update(out.timings, total_s=time.perf_counter() - started)
        return {"images": out.images, "analysis": analysis, "method": self.engine.method,
                "note": self.engine.note, "seed": seed, "prompt": prompt.positive,
                "negative_prompt": prompt.negative, "timings": timings}


def _appearance_fields(found: dict[str, Any]) -> dict[str, Any]:
    """The analysis dict's appearance part: the fields flat when the analysis succeeded, and the
    status (with reason and message when it did not) under ``appearance``."""
    status = found.pop("status", "ok")
    flat = found if status == "ok" else {}
    return {**flat, "appearance": {"status": status, **found}}


def _face_summary(face) -> dict[str, Any]:
    return {"bbox": [float(v) for v in face.bbox], "det_score": float(face.det_score),
            "face_count": int(face.face_count), "image_size": list(face.image_size)}


_instance: IdentityPipeline | None = None
_instance_lock = threading.Lock()


def get_identity_pipeline(settings: Settings | None = None) -> IdentityPipeline:
    """The process's one IdentityPipeline (models load on ``load_models()`` or first use)."""
    global _instance
    with _instance_lock:
        if _instance is None:
            _instance = IdentityPipeline(settings)
        elif settings is not None and settings is not _instance.settings:
            log.warning("get_identity_pipeline: a pipeline already exists; new settings ignored")
        return _instance
