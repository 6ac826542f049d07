"""``idbody generate PHOTO [PHOTO ...] -o DIR``: the whole pipeline in this process, no servers.

One to five photos of one person (combined as the API combines them: worker.face.combined_face).
Each photo goes through the gateway's upload checks, the parameters through the one
GenerationParams model (options derived from it: ``shared.params_cli``), then the seed's Python API
runs with a progress bar on stderr. DIR (default ``generated/``) gets ``identity_body_<i>.png``
(``.jpg``/``.webp`` with ``--output-format``) and ``result.json``: the API's result
(``shared.jobs.views.result_view``: ``success, request_id, count, images[{id, url, identity_score,
face_found, nsfw, seed, ...}], analysis, method, profile, note, parts, identity_judge, safety_check,
face_image_count, keypoints_face_image, pose_source, input_face``; ``url`` is the image's file URI)
plus each image's ``file``, ``width`` and ``height``, and ``seed``, ``params`` and ``timings``.

Exit status: 0 on success; 2 when the input is at fault (bad parameter, unreadable photo, no face:
what the API answers with a 4xx); 1 when generation itself failed. The stable error code is printed
first on stderr (``error: no_face_detected: ...``) and written to result.json too.

Example::

    idbody generate docs/examples/face.jpg --body-type athletic --num-images 2 --seed 7   # into generated/
    idbody generate front.jpg side.jpg --seed 7                        # one identity from two photos
    idbody generate docs/examples/face.jpg --pose-image dancer.jpg     # the pose of the person in dancer.jpg
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path
from typing import Any

from shared.errors import ErrorCode, IdentityBodyError
from shared.face_images import MAX_FACE_IMAGES, check_count
from shared.params_cli import add_param_options, params_from_args

SIDECAR = "result.json"
# not out/, where the README's client example downloads: the two never overwrite each other
DEFAULT_OUTPUT = "generated"
EXIT_INPUT, EXIT_FAILED = 2, 1
STAGES = ("loading models", "analysing the face", "denoising", "writing images")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate", help="Generate full-body images from face photos of one person, in this process (no servers).",
        description="Run the whole pipeline in this process (no servers). Each photo gets the API's upload "
                    "checks and the options its parameter checks; DIR receives identity_body_<i>.png (or .jpg/.webp: "
                    "--output-format) and result.json, the API's result shape with file URLs.",
        epilog="exit status: 0 ok; 2 a photo or a parameter is at fault (no_face_detected, faces_differ, "
               "no_person_in_pose_image, invalid_parameter, ...); 1 generation failed. The error code is "
               "printed on stderr.")
    parser.add_argument("photo", type=Path, nargs="+",
                        help=f"The face photo, or 1-{MAX_FACE_IMAGES} photos of the same person (their identity is "
                             "averaged; the largest, most frontal face lays out the face): JPEG, PNG, WebP, HEIC or AVIF.")
    parser.add_argument("-o", "--output", type=Path, default=Path(DEFAULT_OUTPUT), metavar="DIR",
                        help=f"Folder for the images and result.json (created if missing; default: {DEFAULT_OUTPUT}/).")
    parser.add_argument("--pose-image", type=Path, default=None, metavar="PATH",
                        help="A photo of anyone in the wanted pose (the API's pose_image): its body sets the pose "
                             "in place of --pose, with this person's head where the photo's head is.")
    parser.add_argument("--profile", choices=("auto", "tiny", "instantid"), default=None,
                        help="Model profile (default: settings.model_profile).")
    parser.add_argument("--quiet", action="store_true", help="No progress output on stderr.")
    add_param_options(parser)
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    out: Path = args.output
    try:
        params = params_from_args(args)
        check_count(len(args.photo))
        faces = _load_photos(args.photo)
        pose = _load_photos([args.pose_image], field="pose_image")[0] if args.pose_image else None
        result = _run(faces, params, args, pose)
    except IdentityBodyError as exc:
        return _fail(out, exc.code.value, exc.message, exc.field,
                     EXIT_INPUT if exc.http_status < 500 else EXIT_FAILED)
    except Exception as exc:  # noqa: BLE001 - engine failures (out of memory, ...) named as the job runner names them
        from worker.jobs.runner import error_for

        error = error_for(exc)
        return _fail(out, error.code, f"{error.message} ({type(exc).__name__}: {exc})", None, EXIT_FAILED)
    _write_sidecar(out, result)
    _say(args, f"{result['count']} image(s) and {SIDECAR} in {out}")
    return 0


def _load_photos(paths: list[Path], field: str | None = None) -> list:
    """The photos through the same checks as uploads (size, type from bytes, pixel cap, EXIF);
    ``field`` names the upload field their errors report (the pose photo's: pose_image)."""
    import io
    from contextlib import nullcontext

    from PIL import Image

    from api.upload import normalize_uploads, reported_as
    from shared.settings import get_settings

    photos = []
    for path in paths:
        try:
            photos.append(path.read_bytes())
        except OSError as exc:
            raise IdentityBodyError(ErrorCode.INVALID_PARAMETER, f"Cannot read the photo {path}: "
                                    f"{exc.strerror or exc}.", field=field or "photo") from None
    settings = get_settings()
    with reported_as(field) if field else nullcontext():
        images = normalize_uploads(photos, settings.max_upload_bytes, settings.max_image_pixels,
                                   settings.min_image_side, max_decode_bytes=settings.max_decode_bytes,
                                   max_jpeg_pixels=settings.max_jpeg_pixels)
    return [Image.open(io.BytesIO(image.data)).convert("RGB") for image in images]


def _run(faces, params, args: argparse.Namespace, pose=None) -> dict[str, Any]:
    from shared.settings import get_settings
    from worker.identity_pipeline import IdentityPipeline

    settings = get_settings()
    if args.profile:
        settings = settings.model_copy(update={"model_profile": args.profile})
    _quiet_libraries()
    _stage(args, 0)
    pipeline = IdentityPipeline(settings).load_models()
    _stage(args, 1, f"{pipeline.profile} profile")
    bar = _StepBar(args)
    try:
        out = pipeline.generate(faces, params, progress=bar.update, pose_image=pose)
    finally:
        bar.close()
    _stage(args, 3)
    return _result(out, params, pipeline.profile, args.output)


def _result(out: dict[str, Any], params, profile: str, folder: Path) -> dict[str, Any]:
    """Save the images; the API's result view of them (``shared.jobs.views.result_view``, file URLs),
    plus each image's file name and size, the seed, the parameters and the timings."""
    import time

    from shared.jobs.record import JobRecord, JobResult, JobStatus, ResultImage, result_image_id
    from shared.jobs.views import result_view
    from shared.output_formats import encode_image

    folder.mkdir(parents=True, exist_ok=True)
    details = out.get("image_details") or [{} for _ in out["images"]]
    images = []
    for index, (image, detail) in enumerate(zip(out["images"], details)):
        encoded = encode_image(image, params.output_format, params.output_quality)
        path = (folder / f"{result_image_id(index)}.{encoded.extension}").resolve()
        path.write_bytes(encoded.data)
        images.append(ResultImage(id=result_image_id(index), key=str(path), width=image.width, height=image.height,
                                  content_type=encoded.content_type, **detail))
    record = JobRecord(request_id=str(uuid.uuid4()), status=JobStatus.SUCCEEDED, params=params.model_dump(),
                       created_at=time.time(), result=JobResult(
                           images=images, analysis=out["analysis"], method=out["method"], profile=profile,
                           note=out["note"], parts=list(out.get("parts") or []),
                           identity_judge=out.get("identity_judge"),
                           identity_judge_independent=out.get("identity_judge_independent"),
                           safety_check=out.get("safety_check"), face_image_count=out.get("face_image_count"),
                           keypoints_face_image=out.get("keypoints_face_image"), base_model=out.get("base_model"),
                           pose_source=out.get("pose_source")))
    view = result_view(record, lambda key: Path(key).as_uri())
    for entry, image in zip(view["images"], images):
        entry.update(file=Path(image.key).name, width=image.width, height=image.height)
    return {**view, "seed": out["seed"], "params": params.model_dump(), "timings": out["timings"]}


class _StepBar:
    """Denoise steps as a tqdm bar on stderr, opened at the first step (face analysis comes before)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.bar = args, None

    def update(self, step: int, total: int, *_: Any) -> bool:
        if self.args.quiet:
            return True
        if self.bar is None:
            from tqdm import tqdm

            _stage(self.args, 2)
            self.bar = tqdm(total=total, unit="step", file=sys.stderr, leave=True, dynamic_ncols=True)
        self.bar.update(step - self.bar.n)
        return True

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _quiet_libraries() -> None:
    """Only our stage lines and step bar on stderr: the libraries' loading bars and advice
    (meant for their developers) are switched off; their errors still show."""
    import logging
    import warnings

    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("worker").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)


def _stage(args: argparse.Namespace, index: int, detail: str = "") -> None:
    _say(args, f"[{index + 1}/{len(STAGES)}] {STAGES[index]}" + (f" ({detail})" if detail else ""))


def _say(args: argparse.Namespace, line: str) -> None:
    if not args.quiet:
        print(line, file=sys.stderr, flush=True)


def _fail(out: Path, code: str, message: str, field: str | None, exit_status: int) -> int:
    """result.json with success false and the error; the code first on stderr."""
    _write_sidecar(out, {"success": False, "request_id": str(uuid.uuid4()), "count": 0, "images": [],
                         "analysis": {}, "method": "instantid", "note": None,
                         "error": {"code": code, "message": message, "field": field}})
    print(f"error: {code}: {message}", file=sys.stderr)
    return exit_status


def _write_sidecar(out: Path, body: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / SIDECAR).write_text(json.dumps(body, indent=2, default=str) + "\n")
