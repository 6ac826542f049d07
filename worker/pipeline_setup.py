"""Setting the identity pipeline up (cog's ``setup``, apart from its ``predict`` in
worker.identity_pipeline): decide the model profile once, load the engine and the face analyzer,
warm every stage up before the worker says it is ready, and build the micro-batcher.

Example::

    loaded = load(settings)                      # LoadedModels: engine, analyzers, profile choice
    warm_up(loaded.engine, loaded.face_analyzer, settings, run_lock)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from shared.errors import IdentityBodyError
from shared.settings import Settings
from worker.appearance.analyzer import AppearanceAnalyzer
from worker.engine.denoise_pass import run_pass
from worker.engine.devices import DevicePolicy
from worker.engine.fast_mode import FastOptions
from worker.engine.fast_mode import warm_up as warm_up_fast
from worker.engine.generation import GenerationInputs, generate_images
from worker.engine.loading import Engine, load_engine
from worker.engine.micro_batcher import MicroBatcher, micro_batch_slots
from worker.face import analysis, dlib_analyzer
from worker.face.analysis import FaceInfo
from worker.face.keypoints import draw_kps
from worker.models import profile
from worker.models.profile import ProfileChoice
from worker.pose.blazepose import PoseDetector, load_pose_detector
from worker.tiny.model_dir import build_tiny_model_dir

log = logging.getLogger(__name__)


class FaceAnalyzer(Protocol):
    """What the pipeline asks of a face analyzer (antelopev2's or dlib's)."""

    faces_differ_distance: float  # the default cosine distance past which two photos are two people

    def load(self) -> None: ...
    def analyze(self, image: Image.Image) -> FaceInfo: ...
    def largest_face(self, image: Image.Image) -> FaceInfo | None: ...


def face_analyzer_for(profile_name: str, model_dir: Path, settings: Settings) -> FaceAnalyzer:
    """antelopev2 (insightface) for the released weights; dlib's real detector and recognizer
    for the tiny profile, whose random weights could not recognise anyone (same interface)."""
    analyzer = dlib_analyzer.DlibFaceAnalyzer if profile_name == "tiny" else analysis.FaceAnalyzer
    return analyzer(model_dir, providers=settings.onnx_providers, det_size=(640, 640),
                    min_face_px=settings.min_face_px)


@dataclass
class LoadedModels:
    choice: ProfileChoice
    engine: Engine
    face_analyzer: FaceAnalyzer
    appearance_analyzer: AppearanceAnalyzer | None
    pose_detector: PoseDetector | None
    load_s: float
    loaded_at: float


def load(settings: Settings, face_analyzer: FaceAnalyzer | None = None,
         appearance_analyzer: AppearanceAnalyzer | None = None) -> LoadedModels:
    """Decide the profile, load the engine, the face analyzer (an analyzer given is kept, as is
    an appearance analyzer; one is made from the settings when they hold a Gemini key) and the
    pose detector for pose photos."""
    started = time.perf_counter()
    choice = profile.choose_profile(settings)   # looked up on the module: the one place it is decided
    log.info("model profile: %s (%s)", choice.profile, choice.reason)
    model_dir = _model_dir(choice)
    analyzer = face_analyzer or face_analyzer_for(choice.profile, model_dir, settings)
    analyzer.load()
    policy = DevicePolicy.decide(settings)
    engine = load_engine(model_dir, policy, fast=FastOptions.decide(settings, policy, model_dir))
    if appearance_analyzer is None and settings.gemini_api_key is not None:
        appearance_analyzer = AppearanceAnalyzer.from_settings(settings)
    pose_detector = load_pose_detector()
    load_s = time.perf_counter() - started
    log.info("pipeline loaded in %.1fs", load_s)
    return LoadedModels(choice, engine, analyzer, appearance_analyzer, pose_detector, load_s, time.time())


def _model_dir(choice: ProfileChoice) -> Path:
    if choice.profile == "tiny":
        return build_tiny_model_dir(Path(choice.model_dir))
    return Path(choice.model_dir)


def warm_up(engine: Engine, face_analyzer: FaceAnalyzer, settings: Settings, run_lock: threading.Lock) -> float:
    """Run each stage once so the first real job does not pay for lazy initialisation (ONNX
    sessions, CUDA kernels and allocator, scheduler tables): the face analyzer on a blank image,
    then one 1-step 64x64 generation with a random identity, or, on a compiled engine, the shapes
    it compiles for. Returns the seconds it took."""
    started = time.perf_counter()
    try:
        face_analyzer.analyze(Image.new("RGB", (256, 256), (128, 128, 128)))
    except IdentityBodyError:
        pass  # "no face" is the expected answer for a blank image
    if engine.fast is not None and engine.fast.compiled:
        _warm_up_compiled(engine, run_lock)
        seconds = time.perf_counter() - started
        log.info("compiled engine warmed up in %.1fs", seconds)
        return seconds
    embedding = np.random.default_rng(0).standard_normal(512).astype(np.float32)
    kps = np.array([[22, 24], [42, 24], [32, 34], [24, 44], [40, 44]], dtype=np.float32)
    inputs = GenerationInputs(prompt="a person standing", negative_prompt="", seed=0, face_embedding=embedding,
                              kps_image=draw_kps(64, 64, kps), num_images=1, width=64, height=64, steps=1)
    with run_lock:
        generate_images(engine, inputs)
    seconds = time.perf_counter() - started
    log.info("pipeline warmed up in %.1fs", seconds)
    return seconds


def _warm_up_compiled(engine: Engine, run_lock: threading.Lock) -> None:
    """A compiled engine compiles (and, on CUDA, records its graphs) here, before the worker reports
    ready: every size it compiled for (worker.engine.shape_buckets) at every row bucket, both modes."""
    with run_lock:
        warm_up_fast(engine)


def micro_batcher(engine: Engine, settings: Settings, run_lock: threading.Lock,
                  on_pass: Callable[[int, int], None] | None = None) -> MicroBatcher | None:
    """The batcher that lets concurrent jobs share denoise passes, as ``micro_batch_slots`` decides
    for these settings and this engine; None where micro-batching does not apply."""
    if engine.fast is None or micro_batch_slots(settings, engine.policy.device) < 2:
        return None

    def run(jobs):
        with run_lock:
            return run_pass(engine, jobs)

    log.info("micro-batching: up to %d images per denoise pass, %d ms window",
             settings.max_batch_images, settings.batch_window_ms)
    return MicroBatcher(run, settings.max_batch_images, settings.batch_window_ms / 1000, on_pass=on_pass)
