"""The seed's Python API: one resident identity pipeline per process.

Example::

    from worker.identity_pipeline import get_identity_pipeline

    pipeline = get_identity_pipeline()
    pipeline.load_models()
    result = pipeline(face_image=Image.open("me.jpg"),
                      body_params={"body_type": "athletic", "height_cm": 170, "weight_kg": 65,
                                   "gender": "female"}, num_images=4)
    result["images"], result["method"], result["note"], result["timings"]
    result["image_details"][0]     # {"identity_score": 0.71, "face_found": True,
                                   #  "below_threshold": False, "seed": 1234,
                                   #  "face_detail": "applied", "face_detail_reason": None}, best image first
    pipeline.generate(photo, num_images=2, candidates=6, min_identity_score=0.4)   # re-ranking
    pipeline.pipe.enable_vae_tiling()       # the diffusers pipeline itself

The result's ``analysis`` dict::

    {"face": {"bbox": [x1, y1, x2, y2], "det_score": 0.9, "box_size": [w, h], "face_count": 1,
              "image_size": [w, h]},
     "appearance": {"status": "ok" | "skipped" | "failed", "reason": "..." (unless ok), ...fields},
     "skin_tone": ..., "ethnicity": ..., ...}     # appearance fields, flat, when status is ok

Appearance fields only fill what the caller left empty (shared.params / worker.prompts).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from pathlib import Path
from typing import Any, Callable

from PIL import Image

from shared.params import GenerationParams, parse_params
from shared.settings import Settings, get_settings

log = logging.getLogger(__name__)

APPEARANCE_GRACE_S = 1.0
TINY_NOTE = ("Tiny model profile: the generator's weights are random (for tests and demos), so the images "
             "are noise, not likenesses; face analysis and identity scores use real models (dlib).")


def resolve_model_dir(settings: Settings) -> tuple[str, Path]:
    """(profile, folder) to load, decided by ``worker.profile_choice.choose_profile`` (the one
    decision the worker and ``idbody up`` take too: ``auto`` is ``instantid`` when the model
    folder verifies and a GPU exists, else ``tiny``); a tiny folder is built here."""
    from worker.profile_choice import choose_profile

    choice = choose_profile(settings)
    log.info("model profile: %s (%s)", choice.profile, choice.reason)
    if choice.profile == "tiny":
        from worker.engine.tiny import build_tiny_model_dir

        return "tiny", build_tiny_model_dir(Path(choice.model_dir))
    return choice.profile, Path(choice.model_dir)


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
        self.appearance_analyzer = None     # optional: .submit(pil) -> Future[dict]
        self.profile: str | None = None
        self.model_dir: Path | None = None
        self._lock = threading.Lock()
        self._run_lock = threading.Lock()   # one generation at a time: a diffusers pipeline is stateful

    # --- loading ---------------------------------------------------------------------
    def load_models(self) -> "IdentityPipeline":
        """Load the engine and the face analyzer once; later calls return at once."""
        with self._lock:
            if self.engine is not None:
                return self
            from worker.engine.devices import DevicePolicy
            from worker.engine.loading import load_engine

            self.profile, self.model_dir = resolve_model_dir(self.settings)
            policy = DevicePolicy.decide(self.settings)
            # an analyzer set before loading is kept (as the appearance analyzer is)
            analyzer = self.face_analyzer or face_analyzer_for(self.profile, self.model_dir, self.settings)
            analyzer.load()
            self.engine = load_engine(self.model_dir, policy)
            self.face_analyzer = analyzer
            if self.appearance_analyzer is None and self.settings.gemini_api_key is not None:
                from worker.appearance import AppearanceAnalyzer

                self.appearance_analyzer = AppearanceAnalyzer.from_settings(self.settings)
        return self

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

    def generate(self, face_image: Image.Image, *, body_type: str | None = None, height_cm: float | None = None,
                 weight_kg: float | None = None, gender: str | None = None, skin_tone: str | None = None,
                 ethnicity: str | None = None, pose: str | None = None, clothing: str | None = None,
                 num_images: int | None = None, num_inference_steps: int | None = None,
                 guidance_scale: float | None = None, controlnet_conditioning_scale: float | None = None,
                 ip_adapter_scale: float | None = None, seed: int | None = None, mode: str | None = None,
                 width: int | None = None, height: int | None = None, use_gemini_analysis: bool = False,
                 face_detail: bool | None = None, face_detail_strength: float | None = None,
                 face_region_emphasis: bool | None = None,
                 candidates: int | None = None, min_identity_score: float | None = None,
                 progress: Callable[[int, int], bool | None] | None = None) -> dict[str, Any]:
        """Validate the parameters (shared.params ranges), analyse the face, generate.

        ``progress(step, total)`` is called after every denoise step, the face-detail pass's
        included; returning False stops the run with IdentityBodyError(job_canceled).
        """
        given = {k: v for k, v in locals().items()
                 if k not in ("self", "face_image", "progress") and v is not None}
        params = parse_params(given)
        return self.generate_params(face_image, params, progress=progress)

    def generate_params(self, face_image: Image.Image, params: GenerationParams,
                        progress: Callable[[int, int], bool | None] | None = None) -> dict[str, Any]:
        """The same as ``generate`` for already validated parameters (the Celery task's entry).

        Stages: 1. face analysis of the upload (appearance analysis alongside) → 2. prompt and
        layout (keypoints retargeted to the frame, face region) → 3. base generation (InstantID
        text-to-image, all candidates in one batch) → 4. face-detail pass (InstantID img2img on
        each image's face) → 5. identity score and re-ranking. ``progress`` counts the steps of
        stages 3 and 4 together.
        """
        from worker.engine.face_detail import detail_steps, refine_faces
        from worker.engine.generation import generate_images, stage_progress

        self.load_models()
        started = time.perf_counter()
        timings: dict[str, Any] = {}
        # 1. face analysis (and, at the same time, the optional appearance analysis)
        pending = self._submit_appearance(face_image, params.use_gemini_analysis)
        t = time.perf_counter()
        face = self.face_analyzer.analyze(face_image)
        timings["face_analysis_s"] = time.perf_counter() - t
        analysis = {"face": _face_summary(face), **self._appearance(pending)}
        timings["appearance_wait_s"] = time.perf_counter() - t - timings["face_analysis_s"]
        # 2. prompt and layout (IdentityNet condition, face region)
        count = params.candidate_count()
        seed = params.seed if params.seed is not None else random.randint(0, 2**32 - 1 - count)
        inputs, prompt = self._base_inputs(face, params, analysis, seed, count)
        detail = self._detail_inputs(face, params, analysis, seed)
        total = params.steps() + (detail_steps(params.steps(), params.face_detail_strength) * count if detail else 0)
        with self._run_lock:
            # 3. base generation: all candidates in one batch
            out = generate_images(self.engine, inputs, progress=stage_progress(progress, 0, total))
            images, passes = out.images, [self._detail_off(params)] * len(out.images)
            # 4. face-detail pass on every candidate
            if detail is not None:
                refined = refine_faces(self.engine, images, self.face_analyzer.largest_face, detail,
                                       progress=stage_progress(progress, params.steps(), total))
                images, passes = refined.images, [e.as_dict() for e in refined.entries]
                timings.update(refined.timings)
        # 5. identity score per candidate (after the face pass), then keep the best num_images
        images, details = self._rank_by_identity(images, face.embedding, params, seed, timings, passes)
        timings.update(out.timings, total_s=time.perf_counter() - started)
        return {"images": images, "image_details": details, "analysis": analysis,
                "method": self.engine.method, "profile": self.profile, "note": self.note, "seed": seed,
                "prompt": prompt.positive, "negative_prompt": prompt.negative, "timings": timings}

    def _base_inputs(self, face, params: GenerationParams, analysis: dict[str, Any], seed: int, count: int):
        from worker.engine.face_geometry import layout_face_box, region_mask
        from worker.engine.generation import GenerationInputs
        from worker.engine.output_size import default_size
        from worker.keypoints import draw_kps, retarget_kps
        from worker.prompts import build_prompt

        prompt = build_prompt(params.body_params(), analysis)
        fallback_w, fallback_h = default_size(self.engine.pipe)
        width, height = params.width or fallback_w, params.height or fallback_h
        kps = retarget_kps(face.kps, width, height, params.pose)
        region = None
        if params.face_region_emphasis:
            region = region_mask((width, height), layout_face_box(face.kps, face.bbox, kps, (width, height)))
        inputs = GenerationInputs(
            prompt=prompt.positive, negative_prompt=prompt.negative, seed=seed,
            face_embedding=face.embedding, kps_image=draw_kps(width, height, kps), face_region=region,
            num_images=count, width=width, height=height, mode=params.mode,
            steps=params.steps(), guidance=params.guidance(),
            controlnet_conditioning_scale=params.controlnet_conditioning_scale,
            ip_adapter_scale=params.ip_adapter_scale)
        return inputs, prompt

    def _detail_inputs(self, face, params: GenerationParams, analysis: dict[str, Any], seed: int):
        """The face-detail pass's inputs, or None when it does not run (off, or no InstantID)."""
        from worker.engine.face_detail import FaceDetailInputs
        from worker.prompts import face_detail_prompt

        if not params.face_detail or self.engine.detail_pipe is None:
            return None
        pair = face_detail_prompt(params.body_params(), analysis)
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
        """Score every candidate against the upload's embedding with the loaded recognizer and
        return the ``num_images`` best, best first, with each one's entry for the result (what the
        face-detail pass did to it included)."""
        from worker.face.identity_score import rank_candidates, score_images

        t = time.perf_counter()
        scores = score_images(self.face_analyzer, reference, images)
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

    # --- appearance analysis hook ------------------------------------------------------------
    def _submit_appearance(self, face_image: Image.Image, wanted: bool):
        # Submitted before face analysis so both run at the same time.
        from worker.appearance import start_analysis

        return start_analysis(self.appearance_analyzer, face_image, wanted)

    def _appearance(self, pending) -> dict[str, Any]:
        # The analyzer resolves its future by gemini_timeout_s after submit; the grace only
        # covers thread hand-off, so the GPU never waits much past the Gemini timeout. A hook that
        # breaks that promise still yields the analysis schema's shape (stable reason + message).
        from concurrent.futures import TimeoutError as FutureTimeout

        from worker.appearance_schema import FailureReason, failed_analysis

        wait_s = self.settings.gemini_timeout_s + APPEARANCE_GRACE_S
        try:
            found = dict(pending.result(timeout=wait_s))
        except FutureTimeout:
            pending.cancel()
            log.warning("appearance analysis gave no answer within %.1fs; going on without it", wait_s)
            found = failed_analysis(FailureReason.TIMEOUT, f"Appearance analysis did not finish within "
                                    f"{wait_s:g} s; the job ran without it.")
        except Exception as exc:  # noqa: BLE001 - analysis is optional; the job goes on without it
            log.warning("appearance analysis failed: %r", exc)
            found = failed_analysis(FailureReason.INTERNAL_ERROR, f"Appearance analysis failed unexpectedly "
                                    f"({type(exc).__name__}); the job ran without it.")
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
