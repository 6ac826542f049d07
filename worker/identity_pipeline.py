"""The seed's Python API: one resident identity pipeline per process.

Example::

    from worker.identity_pipeline import get_identity_pipeline

    pipeline = get_identity_pipeline()
    pipeline.load_models()
    result = pipeline(face_image=Image.open("me.jpg"),
                      body_params={"body_type": "athletic", "height_cm": 170, "weight_kg": 65,
                                   "gender": "female"}, num_images=4)
    result["images"], result["method"], result["note"], result["timings"], result["safety_check"], result["identity_judge"]
    result["base_model"]           # "tiny" / "sdxl-base-1.0", or the name given as base_model=...
    result["parts"]                # ["sdxl", "vae-fp16-fix", "identitynet", "ip-adapter", "lcm-lora", "pose-prompt-only"]
    result["image_details"][0]     # {"identity_score": 0.71, "face_found": True,
                                   #  "below_threshold": False, "seed": 1234, "nsfw": False,
                                   #  "face_detail": "applied", "face_detail_reason": None}, best image first
    pipeline.generate(face_image=face, params=GenerationParams(body_type="slim", num_images=2))
    pipeline.generate(face, num_images=2, candidates=6, min_identity_score=0.4)   # re-ranking
    pipeline.generate([front, side], num_images=2)   # 1-5 photos of one person (worker.face.combined_face)
    pipeline.generate(face, pose_image=Image.open("dancer.jpg"))   # the pose of the person in that photo
    result["pose_source"]          # "photo", or the pose template's name ("standing")
    pipeline.pipe.enable_vae_tiling()       # the diffusers pipeline itself

The same object is what a GPU worker keeps resident: ``get_identity_pipeline()`` is the one
instance per process, ``load_models()`` decides the profile once (``choose_profile``) and loads,
``warm_up()`` runs each stage once before the worker publishes readiness, ``info()`` is what the
worker's heartbeat publishes. Those are cog's ``setup`` and live in worker.pipeline_setup; this
module is its ``predict``: the stages of one generation, each pass run by the engine's one
denoise runner (worker.engine.denoise_pass), directly or through the micro-batcher.

The result's ``analysis`` dict::

    {"face": {"bbox": [x1, y1, x2, y2], "det_score": 0.9, "box_size": [w, h], "face_count": 1,
              "image_size": [w, h]},
     "face_images": [{"det_score": 0.9, "box_size": [w, h], "frontality": 0.93, "keypoints": True}, ...],
     "appearance": {"status": "ok" | "skipped" | "failed", "reason": "..." (unless ok), ...fields},
     "skin_tone": ..., "ethnicity": ..., ...}     # appearance fields, flat, when status is ok

``face`` is the photo the keypoints came from (one per photo under ``face_images``, in the order
sent); ``result["face_image_count"]`` and ``result["keypoints_face_image"]`` (1-based) say the same.
Appearance fields only fill what the caller left empty (shared.params / worker.engine.prompts).
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from PIL import Image

from shared.errors import ErrorCode, IdentityBodyError
from shared.face_images import check_count
from shared.params import GenerationParams, parse_params
from shared.settings import Settings, get_settings
from worker.appearance.analyzer import start_analysis, wait_for_analysis
from worker.engine.denoise_pass import JobResult, PassJob, Progress, StepCount, run_pass
from worker.engine.face_detail import plan_face_pass
from worker.engine.generation import GenerationOutput
from worker.engine.job_inputs import base_inputs, base_name, detail_inputs, detail_off, job_steps, pose_report
from worker.engine.output_size import default_size
from worker.face.combined_face import analyze_photos
from worker.face.identity_score import rank_candidates
from worker.output_checks import OutputChecks
from worker.pipeline_setup import FaceAnalyzer, load, micro_batcher, warm_up
from worker.safety.screen import screen_images

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

    from worker.appearance.analyzer import AppearanceAnalyzer
    from worker.engine.loading import Engine
    from worker.engine.micro_batcher import MicroBatcher
    from worker.face.analysis import FaceInfo
    from worker.models.profile import ProfileChoice
    from worker.pose.blazepose import BodyPose, PoseDetector

log = logging.getLogger(__name__)

TINY_NOTE = ("Tiny model profile: the generator's weights are random (for tests and demos), so the images "
             "are noise, not likenesses; face analysis and identity scores use real models (dlib).")
FACE_DETAIL_STAGE = "face_detail"
POSE_FIELD = "pose_image"
NO_PERSON_MESSAGE = ("No person was found in the pose photo. Upload a photo where one person's body is in view "
                     "(head and shoulders at least), or leave pose_image out and pick a pose.")
NO_DETECTOR_MESSAGE = ("This worker has no pose detector (the mediapipe wheel that carries its models is not "
                       "installed), so it cannot read a pose photo; leave pose_image out and pick a pose.")


class IdentityPipeline:
    """Face photo + body parameters -> full-body images keeping the face's identity."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.engine: Engine | None = None
        self.face_analyzer: FaceAnalyzer | None = None
        self.checks: OutputChecks | None = None                        # identity judge, safety check
        self.appearance_analyzer: AppearanceAnalyzer | None = None   # optional: .submit(pil) -> Future[dict]
        self.pose_detector: PoseDetector | None = None                 # reads pose photos (None: not installed)
        self.choice: ProfileChoice | None = None                       # decided once
        self.load_s: float | None = None
        self.warmup_s: float | None = None
        self.loaded_at: float | None = None
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self._lock = threading.Lock()
        self._run_lock = threading.Lock()   # one engine call at a time: a diffusers pipeline is stateful
        self.batcher: MicroBatcher | None = None   # on a batching worker

    # --- setup (worker.pipeline_setup) ---------------------------------------------------
    def load_models(self) -> IdentityPipeline:
        """Decide the profile (once), load the engine and the face analyzer; later calls return at once."""
        with self._lock:
            if self.engine is not None:
                return self
            loaded = load(self.settings, self.face_analyzer, self.appearance_analyzer)
            self.choice, self.face_analyzer, self.appearance_analyzer = (
                loaded.choice, loaded.face_analyzer, loaded.appearance_analyzer)
            self.pose_detector = loaded.pose_detector
            self.load_s, self.loaded_at = loaded.load_s, loaded.loaded_at
            self.checks = OutputChecks.load(self.face_analyzer, self.settings)
            self.engine = loaded.engine
        return self

    def warm_up(self) -> IdentityPipeline:
        """Run each stage once before the worker publishes readiness (``pipeline_setup.warm_up``)."""
        self.load_models()
        self.warmup_s = warm_up(self.engine, self.face_analyzer, self.settings, self._run_lock)
        return self

    def enable_micro_batching(self, on_pass: Callable[[int, int], None] | None = None) -> IdentityPipeline:
        """Let concurrent ``generate`` calls (a gpu worker's pool threads) share denoise passes, base
        and face-detail ones, as ``micro_batch_slots`` decides for these settings and this engine;
        otherwise a no-op."""
        self.load_models()
        self.batcher = micro_batcher(self.engine, self.settings, self._run_lock, on_pass) or self.batcher
        return self

    def info(self) -> dict[str, Any]:
        """What a worker's heartbeat publishes: enough for /readyz and an operator, nothing secret."""
        return {
            "worker_id": self.worker_id, "pipeline_loaded": self.engine is not None,
            "hostname": socket.gethostname(), "pid": os.getpid(),
            "profile": self.profile, "method": self.engine.method if self.engine else None,
            "device": self.engine.policy.device if self.engine else self.settings.device,
            "default_size": list(default_size(self.engine.pipe)) if self.engine else None,
            "loaded_at": self.loaded_at, "load_s": round(self.load_s or 0.0, 3),
            "warmup_s": round(self.warmup_s or 0.0, 3),
            "max_batch_images": self.batcher.max_images if self.batcher else 1,
            "base_models": self.engine.bases.describe() if self.engine and self.engine.bases else [],
            "pose_photos": self.pose_detector is not None,
            "pose_controlnet": self.engine.pose_control if self.engine else None,
        }

    @property
    def profile(self) -> str | None:
        return self.choice.profile if self.choice else None

    @property
    def pipe(self) -> DiffusionPipeline:
        """The diffusers pipeline (loads the models on first use)."""
        return self.load_models().engine.pipe

    @property
    def method(self) -> str:
        return self.load_models().engine.method

    # --- predict: the seed's calls ---------------------------------------------------------
    def __call__(self, face_image: Image.Image | Sequence[Image.Image], body_params: dict[str, Any] | None = None,
                 num_images: int = 4, **overrides: Any) -> dict[str, Any]:
        return self.generate(face_image, **(body_params or {}), num_images=num_images, **overrides)

    def generate(self, face_image: Image.Image | Sequence[Image.Image], params: GenerationParams | None = None, *,
                 progress: Progress | None = None, pose_image: Image.Image | None = None,
                 **fields: Any) -> dict[str, Any]:
        """Validate the parameters (``shared.params``: the same model as the HTTP form and the
        task payload; pass one, or its fields as keywords), analyse the face, generate.
        ``face_image`` is one photo or a list of 1-5 photos of the same person.

        ``progress(step, total)`` is called after every denoise step, the face-detail pass's
        included, with the job's ``total_steps`` from the first call on; returning False stops
        the run with IdentityBodyError(job_canceled). ``pose_image``, a photo of anyone, sets the
        pose in place of the ``pose`` template (IdentityBodyError(no_person_in_pose_image) when it
        shows nobody).
        """
        if params is None:
            params = parse_params({k: v for k, v in fields.items() if v is not None})
        elif fields:
            params = parse_params({**params.model_dump(exclude_none=True), **fields})
        photos = [face_image] if isinstance(face_image, Image.Image) else list(face_image)
        check_count(len(photos))
        return self._generate(photos, params, progress, pose_image)

    def total_steps(self, params: GenerationParams) -> int:
        """The denoise steps ``generate`` will report for ``params``: base pass + face-detail pass."""
        return job_steps(self.load_models().engine, params)

    def _generate(self, photos: list[Image.Image], params: GenerationParams,
                  progress: Progress | None, pose_image: Image.Image | None = None) -> dict[str, Any]:
        """Stages: 1. face analysis of the photos, one identity from all of them (appearance
        analysis of the first alongside; the pose photo's body landmarks) -> 2. prompt and layout
        (keypoints retargeted to the frame, or placed on the pose photo's head; face region) ->
        3. base generation (InstantID text-to-image, all candidates in one pass) -> 4. face-detail
        pass (InstantID img2img on every image's face, all in one pass) -> 5. identity score by the
        judge and re-ranking -> 6. safety check. ``progress`` counts the steps of stages 3 and 4 together, out of one total."""
        self.load_models()
        base = base_name(self.engine, params)   # an unknown base fails the job before any work
        started = time.perf_counter()
        timings: dict[str, Any] = {}
        # 1. face analysis; the optional appearance analysis is submitted first so both run at once
        pending = start_analysis(self.appearance_analyzer, photos[0], params.use_gemini_analysis)
        t = time.perf_counter()
        combined = analyze_photos(self.face_analyzer, photos, self.settings.faces_differ_distance)
        face = combined.face
        timings["face_analysis_s"] = time.perf_counter() - t
        analysis = {"face": _face_summary(face), "face_images": combined.summary(), **_appearance_fields(
            wait_for_analysis(pending, self.settings.gemini_timeout_s))}
        timings["appearance_wait_s"] = time.perf_counter() - t - timings["face_analysis_s"]
        body = self._body_in(pose_image, timings) if pose_image is not None else None
        # 2. prompt and layout (IdentityNet condition, face region)
        count = params.candidate_count()
        seed = params.seed if params.seed is not None else random.randint(0, 2**32 - 1 - count)
        inputs, prompt = base_inputs(self.engine, face, params, analysis, seed, count, body)
        detail = detail_inputs(self.engine, face, params, analysis, seed)
        total = job_steps(self.engine, params)
        # 3. base generation: all candidates in one pass (shared with other jobs on a batching worker)
        out = self._pass(PassJob(inputs.request(), progress, StepCount(total=total)))
        images, passes = out.images, [detail_off(self.engine, params)] * len(out.images)
        # 4. face-detail pass: every candidate's face in one pass, counted after the base steps
        if detail is not None:
            face_pass = plan_face_pass(self.engine, images, self.face_analyzer.largest_face, detail)
            refined = face_pass.finish(self._run(face_pass.job(
                progress, StepCount(before=params.steps(), total=total, stage=FACE_DETAIL_STAGE))))
            images, passes = refined.images, [e.as_dict() for e in refined.entries]
            timings.update(refined.timings)
        # 5. identity score per candidate (after the face pass) by the judge, then keep the best num_images
        checks = OutputChecks.of(self)
        reference = checks.judge.reference(photos, face)
        images, details = self._rank_by_identity(images, reference, params, seed, timings, passes)
        # 6. safety check on every returned image (a flagged one is withheld: worker.safety.screen)
        images, details = screen_images(checks.safety, images, details, timings)
        timings.update(out.timings, total_s=time.perf_counter() - started)
        pose = pose_report(self.engine, params, photo=body is not None)
        note = " ".join(n for n in (self.note, pose.pop("pose_note")) if n) or None
        return {"images": images, "image_details": details, "analysis": analysis,
                "method": self.engine.method, "profile": self.profile, "note": note, "seed": seed,
                "base_model": base, **pose, **checks.describe(),
                "face_image_count": len(photos), "keypoints_face_image": combined.keypoints_from + 1,
                "prompt": prompt.positive, "negative_prompt": prompt.negative, "timings": timings}

    def _body_in(self, pose_image: Image.Image, timings: dict[str, Any]) -> BodyPose:
        """The pose photo's body landmarks (stage 1, beside the face analysis)."""
        if self.pose_detector is None:
            raise IdentityBodyError(ErrorCode.MODELS_MISSING, NO_DETECTOR_MESSAGE, field=POSE_FIELD)
        t = time.perf_counter()
        body = self.pose_detector.detect(pose_image)
        timings["pose_detection_s"] = time.perf_counter() - t
        if body is None:
            raise IdentityBodyError(ErrorCode.NO_PERSON_IN_POSE_IMAGE, NO_PERSON_MESSAGE, field=POSE_FIELD)
        return body

    def _run(self, job: PassJob) -> JobResult:
        """One job's denoise pass: through the micro-batcher on a batching worker (a pass with
        nothing to denoise needs no company), else on this thread."""
        if self.batcher is not None and job.request.rows:
            return self.batcher.submit(job)
        with self._run_lock:
            (result,) = run_pass(self.engine, [job])
        return result

    def _pass(self, job: PassJob) -> GenerationOutput:
        result = self._run(job)
        if result.error is not None:
            raise result.error
        return GenerationOutput(images=result.images, timings=result.timings)

    def _rank_by_identity(self, images: list[Image.Image], reference, params: GenerationParams, seed: int,
                          timings: dict[str, Any], passes: list[dict[str, Any]] | None = None,
                          ) -> tuple[list[Image.Image], list[dict[str, Any]]]:
        """Score every candidate against the upload's embedding with the identity judge and
        return the ``num_images`` best, best first, with each one's entry for the result (what the
        face-detail pass did to it included)."""
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


def _face_summary(face: FaceInfo) -> dict[str, Any]:
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
