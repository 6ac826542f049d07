"""The seed's Python API: one resident identity pipeline per process.

Example::

    from worker.identity_pipeline import get_identity_pipeline

    pipeline = get_identity_pipeline()
    pipeline.load_models()
    result = pipeline(face_image=Image.open("me.jpg"),
                      body_params={"body_type": "athletic", "height_cm": 170, "weight_kg": 65,
                                   "gender": "female"}, num_images=4)
    result["images"], result["method"], result["note"], result["timings"], result["safety_check"], result["identity_judge"]
    result["parts"]                # ["sdxl", "vae-fp16-fix", "identitynet", "ip-adapter", "lcm-lora", "pose-prompt-only"]
    result["image_details"][0]     # {"identity_score": 0.71, "face_found": True,
                                   #  "below_threshold": False, "seed": 1234, "nsfw": False,
                                   #  "face_detail": "applied", "face_detail_reason": None}, best image first
    pipeline.generate(face_image=face, params=GenerationParams(body_type="slim", num_images=2))
    pipeline.generate(face, num_images=2, candidates=6, min_identity_score=0.4)   # re-ranking
    pipeline.pipe.enable_vae_tiling()       # the diffusers pipeline itself

The same object is what a GPU worker keeps resident: ``get_identity_pipeline()`` is the one
instance per process, ``load_models()`` decides the profile once (``choose_profile``) and loads,
``warm_up()`` runs each stage once before the worker publishes readiness, ``info()`` is what the
worker's heartbeat publishes.

The result's ``analysis`` dict::

    {"face": {"bbox": [x1, y1, x2, y2], "det_score": 0.9, "box_size": [w, h], "face_count": 1,
              "image_size": [w, h]},
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
TINY_NOTE = ("Tiny model profile: the generator's weights are random (for tests and demos), so the images "
             "are noise, not likenesses; face analysis and identity scores use real models (dlib).")


def face_analyzer_for(profile: str, model_dir: Path, settings: Settings):
    """antelopev2 (insightface) for the released weights; dlib's real detector and recognizer
    for the tiny profile, whose random weights could not recognise anyone (same interface)."""
    if profile == "tiny":
        from worker.face.dlib_analyzer import DlibFaceAnalyzer as Analyzer
    else:
        from worker.face.analysis import FaceAnalyzer as Analyzer
    return Analyzer(model_dir, providers=settings.onnx_providers, det_size=(640, 640),
                    min_face_px=settings.min_face_px)


class IdentityPipeline:
    """Face photo + body parameters -> full-body images keeping the face's identity."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.engine = None
        self.face_analyzer = None
        self.checks = None                  # worker.output_checks.OutputChecks: identity judge, safety check
        self.appearance_analyzer = None     # optional: .submit(pil) -> Future[dict]
        self.choice = None                  # worker.models.profile.ProfileChoice, decided once
        self.load_s: float | None = None
        self.warmup_s: float | None = None
        self.loaded_at: float | None = None
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self._lock = threading.Lock()
        self._run_lock = threading.Lock()   # one engine call at a time: a diffusers pipeline is stateful
        self.batcher = None                 # worker.engine.micro_batcher.MicroBatcher, on a batching worker

    # --- lifecycle ---------------------------------------------------------------------
    def load_models(self) -> "IdentityPipeline":
        """Decide the profile (once), load the engine and the face analyzer; later calls return at once."""
        with self._lock:
            if self.engine is not None:
                return self
            from worker.engine.devices import DevicePolicy
            from worker.engine.fast_mode import FastOptions
            from worker.engine.loading import load_engine
            from worker.models.profile import choose_profile
            from worker.output_checks import OutputChecks

            started = time.perf_counter()
            self.choice = choose_profile(self.settings)
            log.info("model profile: %s (%s)", self.choice.profile, self.choice.reason)
            model_dir = self._model_dir()
            # an analyzer set before loading is kept (as the appearance analyzer is)
            analyzer = self.face_analyzer or face_analyzer_for(self.profile, model_dir, self.settings)
            analyzer.load()
            policy = DevicePolicy.decide(self.settings)
            self.engine = load_engine(model_dir, policy, fast=FastOptions.decide(self.settings, policy, model_dir))
            self.face_analyzer = analyzer
            self.checks = OutputChecks.load(analyzer, self.settings)
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
        if getattr(self.engine.fast, "compiled", None):
            self._warm_up_compiled()
            return self
        embedding = np.random.default_rng(0).standard_normal(512).astype(np.float32)
        kps = np.array([[22, 24], [42, 24], [32, 34], [24, 44], [40, 44]], dtype=np.float32)
        inputs = GenerationInputs(prompt="a person standing", negative_prompt="", seed=0, face_embedding=embedding,
                                  kps_image=draw_kps(64, 64, kps), num_images=1, width=64, height=64, steps=1)
        with self._run_lock:
            generate_images(self.engine, inputs)
        self.warmup_s = time.perf_counter() - started
        log.info("pipeline warmed up in %.1fs", self.warmup_s)
        return self

    def _warm_up_compiled(self) -> None:
        """A compiled engine compiles and records its CUDA graphs here, before the worker reports
        ready, at the default output size for the batch sizes it will see most (others record on
        first use: a replay's cost, not a compile's)."""
        from shared.params import GenerationParams
        from worker.engine.fast_mode import warm_up

        started = time.perf_counter()
        size, most = GenerationParams.model_fields, self.settings.max_batch_images
        with self._run_lock:
            warm_up(self.engine, size["width"].default, size["height"].default,
                    rows=tuple(sorted({2, min(4, most), most})))
        self.warmup_s = time.perf_counter() - started
        log.info("compiled engine warmed up in %.1fs", self.warmup_s)

    def enable_micro_batching(self, on_pass=None) -> "IdentityPipeline":
        """Let concurrent ``generate`` calls (a gpu worker's pool threads) share denoise passes,
        as ``micro_batch_slots`` decides for these settings and this engine; otherwise a no-op."""
        from worker.engine.batch_generation import generate_batch
        from worker.engine.micro_batcher import MicroBatcher, micro_batch_slots

        self.load_models()
        if self.engine.fast is None or micro_batch_slots(self.settings, self.engine.policy.device) < 2:
            return self

        def run(jobs):
            with self._run_lock:
                return generate_batch(self.engine, jobs)

        self.batcher = MicroBatcher(run, self.settings.max_batch_images, self.settings.batch_window_ms / 1000,
                                    on_pass=on_pass)
        log.info("micro-batching: up to %d images per denoise pass, %d ms window",
                 self.settings.max_batch_images, self.settings.batch_window_ms)
        return self

    def info(self) -> dict[str, Any]:
        """What a worker's heartbeat publishes: enough for /readyz and an operator, nothing secret."""
        from worker.engine.output_size import default_size

        return {
            "worker_id": self.worker_id, "pipeline_loaded": self.engine is not None,
            "hostname": socket.gethostname(), "pid": os.getpid(),
            "profile": self.profile, "method": self.engine.method if self.engine else None,
            "device": self.engine.policy.device if self.engine else self.settings.device,
            "default_size": list(default_size(self.engine.pipe)) if self.engine else None,
            "loaded_at": self.loaded_at, "load_s": round(self.load_s or 0.0, 3),
            "warmup_s": round(self.warmup_s or 0.0, 3),
            "max_batch_images": self.batcher.max_images if self.batcher else 1,
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

        ``progress(step, total)`` is called after every denoise step, the face-detail pass's
        included; returning False stops the run with IdentityBodyError(job_canceled).
        """
        if params is None:
            params = parse_params({k: v for k, v in fields.items() if v is not None})
        elif fields:
            params = parse_params({**params.model_dump(exclude_none=True), **fields})
        return self._generate(face_image, params, progress)

    def _generate(self, face_image: Image.Image, params: GenerationParams,
                  progress: Progress | None) -> dict[str, Any]:
        """Stages: 1. face analysis of the upload (appearance analysis alongside) → 2. prompt and
        layout (keypoints retargeted to the frame, face region) → 3. base generation (InstantID
        text-to-image, all candidates in one batch) → 4. face-detail pass (InstantID img2img on
        each image's face) → 5. identity score by the judge and re-ranking → 6. safety check.
        ``progress`` counts the steps of stages 3 and 4 together."""
        from worker.appearance.analyzer import start_analysis, wait_for_analysis
        from worker.engine.face_detail import detail_steps, refine_faces
        from worker.engine.generation import stage_progress
        from worker.output_checks import OutputChecks
        from worker.safety.screen import screen_images

        self.load_models()
        started = time.perf_counter()
        timings: dict[str, Any] = {}
        # 1. face analysis; the optional appearance analysis is submitted first so both run at once
        pending = start_analysis(self.appearance_analyzer, face_image, params.use_gemini_analysis)
        t = time.perf_counter()
        face = self.face_analyzer.analyze(face_image)
        timings["face_analysis_s"] = time.perf_counter() - t
        analysis = {"face": _face_summary(face), **_appearance_fields(
            wait_for_analysis(pending, self.settings.gemini_timeout_s))}
        timings["appearance_wait_s"] = time.perf_counter() - t - timings["face_analysis_s"]
        # 2. prompt and layout (IdentityNet condition, face region)
        count = params.candidate_count()
        seed = params.seed if params.seed is not None else random.randint(0, 2**32 - 1 - count)
        inputs, prompt = self._base_inputs(face, params, analysis, seed, count)
        detail = self._detail_inputs(face, params, analysis, seed)
        total = params.steps() + (detail_steps(params.steps(), params.face_detail_strength) * count if detail else 0)
        # 3. base generation: all candidates in one batch (shared with other jobs on a batching worker)
        out = self._base_generation(inputs, stage_progress(progress, 0, total))
        images, passes = out.images, [self._detail_off(params)] * len(out.images)
        with self._run_lock:
            # 4. face-detail pass on every candidate
            if detail is not None:
                refined = refine_faces(self.engine, images, self.face_analyzer.largest_face, detail,
                                       progress=stage_progress(progress, params.steps(), total, "face_detail"))
                images, passes = refined.images, [e.as_dict() for e in refined.entries]
                timings.update(refined.timings)
        # 5. identity score per candidate (after the face pass) by the judge, then keep the best num_images
        checks = OutputChecks.of(self)
        reference = checks.judge.reference(face_image, face)
        images, details = self._rank_by_identity(images, reference, params, seed, timings, passes)
        # 6. safety check on every returned image (a flagged one is withheld: worker.safety.screen)
        images, details = screen_images(checks.safety, images, details, timings)
        timings.update(out.timings, total_s=time.perf_counter() - started)
        return {"images": images, "image_details": details, "analysis": analysis,
                "method": self.engine.method, "profile": self.profile, "note": self.note, "seed": seed,
                "parts": self.engine.parts, **checks.describe(),
                "prompt": prompt.positive, "negative_prompt": prompt.negative, "timings": timings}

    def _base_generation(self, inputs, progress: Progress | None):
        from worker.engine.batch_generation import BatchJob
        from worker.engine.generation import GenerationOutput, generate_images

        if self.batcher is None:
            with self._run_lock:
                return generate_images(self.engine, inputs, progress=progress)
        result = self.batcher.submit(BatchJob(inputs, progress))
        if result.error is not None:
            raise result.error
        return GenerationOutput(images=result.images, timings=result.timings)

    def _base_inputs(self, face, params: GenerationParams, analysis: dict[str, Any], seed: int, count: int):
        from worker.engine.face_geometry import layout_face_box, region_mask
        from worker.engine.generation import GenerationInputs
        from worker.engine.output_size import default_size
        from worker.engine.pose_skeleton import draw_pose, pose_points
        from worker.engine.prompts import build_prompt
        from worker.face.keypoints import draw_kps, retarget_kps

        prompt = build_prompt(params.prompt_params(), analysis)
        fallback_w, fallback_h = default_size(self.engine.pipe)
        width, height = params.width or fallback_w, params.height or fallback_h
        kps = retarget_kps(face.kps, width, height, params.pose)
        region = None
        if params.face_region_emphasis:
            region = region_mask((width, height), layout_face_box(face.kps, face.bbox, kps, (width, height)))
        inputs = GenerationInputs(
            prompt=prompt.positive, negative_prompt=prompt.negative, seed=seed,
            face_embedding=face.embedding, kps_image=draw_kps(width, height, kps), face_region=region,
            # the pose ControlNet's skeleton when one is loaded; else the prompt alone says the pose
            pose_image=draw_pose(width, height, pose_points(params.pose, kps)) if self.engine.pose_control else None,
            num_images=count, width=width, height=height, mode=params.mode,
            steps=params.steps(), guidance=params.guidance(),
            controlnet_conditioning_scale=params.controlnet_conditioning_scale,
            ip_adapter_scale=params.ip_adapter_scale)
        return inputs, prompt

    def _detail_inputs(self, face, params: GenerationParams, analysis: dict[str, Any], seed: int):
        """The face-detail pass's inputs, or None when it does not run (off, or no InstantID)."""
        from worker.engine.face_detail import FaceDetailInputs
        from worker.engine.prompts import face_detail_prompt

        if not params.face_detail or self.engine.method != "instantid":
            return None
        pair = face_detail_prompt(params.prompt_params(), analysis)
        return FaceDetailInputs(
            prompt=pair.positive, negative_prompt=pair.negative, face_embedding=face.embedding, seed=seed,
            strength=params.face_detail_strength, mode=params.mode, steps=params.steps(),
            guidance=params.guidance(), controlnet_conditioning_scale=params.controlnet_conditioning_scale,
            ip_adapter_scale=params.ip_adapter_scale)

    def _detail_off(self, params: GenerationParams) -> dict[str, Any]:
        why = "off" if not params.face_detail else f"unavailable with {self.engine.method}"
        return {"face_found": None, "face_detail": "skipped", "face_detail_reason": why, "face_crop_box": None}

    def _rank_by_identity(self, images: list[Image.Image], reference, params: GenerationParams, seed: int,
                          timings: dict[str, Any], passes: list[dict[str, Any]] | None = None,
                          ) -> tuple[list[Image.Image], list[dict[str, Any]]]:
        """Score every candidate against the upload's embedding with the identity judge and
        return the ``num_images`` best, best first, with each one's entry for the result (what the
        face-detail pass did to it included)."""
        from worker.face.identity_score import rank_candidates
        from worker.output_checks import OutputChecks

        t = time.perf_counter()
        scores = OutputChecks.of(self).judge.score(reference, images)
        timings["identity_score_s"] = time.perf_counter() - t
        ranked = rank_candidates(scores, keep=params.num_images, min_score=params.min_identity_score)
        passes = passes or [{"face_detail": None, "face_detail_reason": None}] * len(images)
        details = [{"identity_score": r.identity_score, "face_found": r.face_found,
                    "below_threshold": r.below_threshold, "seed": seed + r.index,
                    "face_detail": passes[r.index]["face_detail"],
                    "face_detail_reason": passes[r.index]["face_detail_reason"]} for r in ranked]
        return [images[r.index] for r in ranked], details

    @property
    def note(self) -> str | None:
        """What a caller must know about how the images were made (fallback, tiny weights)."""
        notes = [self.engine.note, TINY_NOTE if self.profile == "tiny" else None]
        return " ".join(n for n in notes if n) or None


def _appearance_fields(found: dict[str, Any]) -> dict[str, Any]:
    """The analysis dict's appearance part: the fields flat when the analysis succeeded, and the
    status (with reason and message when it did not) under ``appearance``."""
    status = found.pop("status", "ok")
    flat = found if status == "ok" else {}
    return {**flat, "appearance": {"status": status, **found}}


def _face_summary(face) -> dict[str, Any]:
    x1, y1, x2, y2 = (float(v) for v in face.bbox)
    return {"bbox": [x1, y1, x2, y2], "det_score": round(float(face.det_score), 4),
            "box_size": [round(x2 - x1, 1), round(y2 - y1, 1)],
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
