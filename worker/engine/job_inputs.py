"""What a job's parameters become for the engine: the base pass's inputs (stage 2, prompt and
layout), the face-detail pass's, and the job's step total.

The total is known before the first step and never changes: the base pass's steps plus the
face-detail pass's, which refines all of a job's faces in one pass of ``detail_steps`` steps
whatever the number of faces found (an image without a face adds none, and a job where no face
is found has the pass's steps counted at once).

Example::

    total = job_steps(engine, params)                  # 5 + 2 for the fast defaults
    inputs, prompt = base_inputs(engine, face, params, analysis, seed=42, count=4)
    inputs, prompt = base_inputs(engine, face, params, analysis, seed=42, count=4, body=pose)  # a pose photo's
    detail = detail_inputs(engine, face, params, analysis, seed=42)   # None when the pass is off
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.params import GenerationParams
from worker.engine.denoise_pass import DenoiseEngine
from worker.engine.face_detail import FaceDetailInputs, detail_steps
from worker.engine.face_geometry import layout_face_box, region_mask
from worker.engine.generation import GenerationInputs
from worker.engine.loading import POSE_PROMPT_ONLY
from worker.engine.output_size import default_size
from worker.engine.pose_skeleton import draw_pose, pose_points
from worker.engine.prompts import PromptPair, build_prompt, face_detail_prompt
from worker.face.analysis import FaceInfo
from worker.face.keypoints import draw_kps, retarget_kps
from worker.pose.blazepose import BodyPose
from worker.pose.photo_skeleton import photo_layout

if TYPE_CHECKING:
    from worker.engine.loading import Engine

PHOTO_POSE = "photo"   # a result's pose_source when a pose photo set the pose (else the template's name)
# what a result's parts say instead of pose-prompt-only when a pose photo met no pose ControlNet
POSE_PHOTO_HEAD_ONLY = "pose-photo-head-only"
HEAD_ONLY_NOTE = ("No pose ControlNet is loaded, so the pose photo only placed the head; the body's pose "
                  "was not drawn from it ('idbody models download --with pose' adds one).")


def base_name(engine: DenoiseEngine, params: GenerationParams) -> str | None:
    """The base checkpoint the job runs on, by its name (the default's too, so that jobs naming it
    and jobs naming none share passes); IdentityBodyError(unknown_base_model) for a name the
    engine does not have."""
    bases = getattr(engine, "bases", None)
    if bases is None:
        return params.base_model
    return bases.find(params.base_model).name


def face_detail_runs(engine: DenoiseEngine, params: GenerationParams) -> bool:
    """The face-detail pass runs when asked for and the engine is InstantID's."""
    return params.face_detail and engine.method == "instantid"


def job_steps(engine: DenoiseEngine, params: GenerationParams) -> int:
    """Every denoise step the job will report: the base pass's and the face-detail pass's."""
    detail = detail_steps(params.steps(), params.face_detail_strength) if face_detail_runs(engine, params) else 0
    return params.steps() + detail


def base_inputs(engine: DenoiseEngine, face: FaceInfo, params: GenerationParams, analysis: dict[str, Any],
                seed: int, count: int, body: BodyPose | None = None) -> tuple[GenerationInputs, PromptPair]:
    """The base pass: the prompt, the keypoints retargeted to the frame, the face region and the
    pose skeleton (with a pose ControlNet; else the prompt alone says the pose). ``body``, a pose
    photo's landmarks, replaces the ``pose`` template: the head goes where the photo's is."""
    prompt = build_prompt(params.prompt_params(), analysis, pose_photo=body is not None)
    fallback_w, fallback_h = default_size(engine.pipe)
    width, height = params.width or fallback_w, params.height or fallback_h
    if body is not None:
        layout = photo_layout(body, face.kps, width, height)
        kps, joints = layout.kps, layout.joints
    else:
        kps = retarget_kps(face.kps, width, height, params.pose)
        joints = pose_points(params.pose, kps)
    region = None
    if params.face_region_emphasis:
        region = region_mask((width, height), layout_face_box(face.kps, face.bbox, kps, (width, height)))
    inputs = GenerationInputs(
        prompt=prompt.positive, negative_prompt=prompt.negative, seed=seed,
        face_embedding=face.embedding, kps_image=draw_kps(width, height, kps), face_region=region,
        pose_image=draw_pose(width, height, joints) if engine.pose_control else None,
        num_images=count, width=width, height=height, mode=params.mode,
        steps=params.steps(), guidance=params.guidance(),
        controlnet_conditioning_scale=params.controlnet_conditioning_scale,
        ip_adapter_scale=params.ip_adapter_scale, base=base_name(engine, params))
    return inputs, prompt


def detail_inputs(engine: DenoiseEngine, face: FaceInfo, params: GenerationParams, analysis: dict[str, Any],
                  seed: int) -> FaceDetailInputs | None:
    """The face-detail pass's inputs, or None when it does not run (off, or no InstantID)."""
    if not face_detail_runs(engine, params):
        return None
    pair = face_detail_prompt(params.prompt_params(), analysis)
    return FaceDetailInputs(
        prompt=pair.positive, negative_prompt=pair.negative, face_embedding=face.embedding, seed=seed,
        strength=params.face_detail_strength, mode=params.mode, steps=params.steps(),
        guidance=params.guidance(), controlnet_conditioning_scale=params.controlnet_conditioning_scale,
        ip_adapter_scale=params.ip_adapter_scale, base=base_name(engine, params))


def detail_off(engine: DenoiseEngine, params: GenerationParams) -> dict[str, Any]:
    """An image's face-detail entry when the pass did not run."""
    why = "off" if not params.face_detail else f"unavailable with {engine.method}"
    return {"face_found": None, "face_detail": "skipped", "face_detail_reason": why, "face_crop_box": None}


def pose_report(engine: Engine, params: GenerationParams, photo: bool) -> dict[str, Any]:
    """How the job's pose was set, for its result: ``pose_source`` (photo or the template's name),
    the parts (a pose photo without a pose ControlNet says so) and the note it adds, if any."""
    parts = list(engine.parts)
    if not photo:
        return {"pose_source": params.pose, "parts": parts, "pose_note": None}
    if engine.pose_control:
        return {"pose_source": PHOTO_POSE, "parts": parts, "pose_note": None}
    parts = [POSE_PHOTO_HEAD_ONLY if part == POSE_PROMPT_ONLY else part for part in parts]
    return {"pose_source": PHOTO_POSE, "parts": parts, "pose_note": HEAD_ONLY_NOTE}
