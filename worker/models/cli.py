"""``idbody models download|verify|add-base|build-tiny``: fill, check, extend and fake the engine's
model folder.

Example::

    idbody models download --only instantid,antelopev2
    idbody models verify --json
    idbody models add-base ~/juggernautXL.safetensors --name juggernaut
    idbody models build-tiny --dir .cache/tiny-models
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from shared.errors import IdentityBodyError

LABELS = {"ok": "ok", "missing": "missing", "wrong_size": "wrong size", "wrong_checksum": "wrong checksum"}


def register(subparsers: argparse._SubParsersAction) -> None:
    from worker.models.manifest import INSTANTID_MANIFEST

    parts = ",".join(INSTANTID_MANIFEST.keys)
    models = subparsers.add_parser(
        "models", help="Download, verify or build the engine's model folder.",
        description="Manage the local folder the InstantID engine loads its weights from.",
    )
    commands = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    download = commands.add_parser(
        "download", help="Fetch the released weights into the model folder (resumable).",
        description="Fetch SDXL base (fp16), the fp16-fix VAE, InstantID, LCM-LoRA and the antelopev2 "
        "face pack into one folder. Each part's licence is printed first (InstantID with antelopev2: "
        "non-commercial research only). Parts that already verify are skipped; an interrupted run "
        "resumes where it stopped.",
    )
    _add_model_dir(download)
    download.add_argument("--only", default=None, metavar="PARTS",
                          help=f"Comma-separated parts to fetch, from: {parts} (default: all).")
    download.add_argument("--with", dest="with_parts", default=None, metavar="PARTS",
                          help="Optional parts to fetch too: pose (an SDXL OpenPose ControlNet; without it the "
                               "pose parameter is prompt-only).")
    download.add_argument("--no-progress", action="store_true", help="Hide progress bars.")
    download.set_defaults(func=run_download)

    verify = commands.add_parser(
        "verify", help="Check every expected file: ok, missing or wrong size. Exit 1 when incomplete.",
        description="Print each expected file of the model folder as ok / missing / wrong size "
        "(sizes from a stat, no hashing unless --checksums), the files of bases added with add-base "
        "included. Exits 1 when anything is missing.",
    )
    _add_model_dir(verify)
    verify.add_argument("--checksums", action="store_true",
                        help="Also hash each file and compare its sha256 where one is on record (slow: reads every byte).")
    verify.add_argument("--json", action="store_true", help="Print the report as JSON instead of lines.")
    verify.add_argument("--with", dest="with_parts", default=None, metavar="PARTS",
                        help="Check optional parts too (pose).")
    verify.set_defaults(func=run_verify)

    add = commands.add_parser(
        "add-base", help="Add an SDXL fine-tune (single .safetensors file or diffusers folder) as a base jobs can pick.",
        description="Check that PATH is an SDXL base checkpoint of the architecture this server runs (UNet, VAE "
        "and both text encoders: every tensor name and shape, read from the file headers), store it in the model "
        "folder as bases/NAME/ (a diffusers folder is hard-linked or copied; a single file is converted once with "
        "diffusers, offline) and record its sha256. Jobs then pick it with base_model=NAME; GET /api/v1/info lists "
        "it under base_models. Workers read the list when they start: restart them to offer a new base.",
    )
    add.add_argument("path", type=Path, metavar="PATH",
                     help="A single-file SDXL checkpoint (.safetensors) or a diffusers folder with unet/, vae/, "
                          "text_encoder/ and text_encoder_2/.")
    add.add_argument("--name", required=True, metavar="NAME",
                     help="The name jobs use in base_model: lower-case letters, digits, '.', '_', '-' (at most 64).")
    _add_model_dir(add)
    add.set_defaults(func=run_add_base)

    tiny = commands.add_parser(
        "build-tiny", help="Build the small random-weight model folder of the tiny profile (offline).",
        description="Write the tiny profile's models (same classes, small random configs) with "
        "save_pretrained, so the regular loading code can load them. Needs no network.",
    )
    tiny.add_argument("--dir", type=Path, default=None,
                      help="Output folder (default: settings tiny_model_dir, env IDBODY_TINY_MODEL_DIR).")
    tiny.set_defaults(func=run_build_tiny)


def _add_model_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="Model folder (default: settings model_dir, env IDBODY_MODEL_DIR).")


def _settings():
    from shared.settings import get_settings

    return get_settings()


def format_check_line(check) -> str:
    """``ok      <path>  (N bytes)`` / ``missing <path>`` / ``wrong size <path> (expected N, found M)``."""
    label = LABELS[check.status]
    expected = check.expected.size
    if check.status == "ok":
        detail = f"{check.found_size} bytes" + (", sha256 ok" if check.found_sha256 else "")
    elif check.status == "missing":
        detail = f"expected {expected} bytes" if expected is not None else "expected (size unknown)"
    elif check.status == "wrong_size":
        want = f"{expected} bytes" if expected is not None else "a non-empty file"
        detail = f"expected {want}, found {check.found_size} bytes"
    else:
        detail = f"expected sha256 {check.expected.sha256}, found {check.found_sha256}"
    return f"{label:<14} {check.path}  ({detail})"


def print_report(report) -> None:
    for check in report.checks:
        print(format_check_line(check))
    print(("complete: " if report.complete else "incomplete: ") + report.summary())


def run_verify(args: argparse.Namespace) -> int:
    from worker.models.bases import expected_base_files
    from worker.models.manifest import INSTANTID_MANIFEST
    from worker.models.store import verify

    model_dir = args.model_dir or _settings().model_dir
    try:
        manifest = INSTANTID_MANIFEST.plus(_parts(args.with_parts))
    except IdentityBodyError as exc:
        print(f"error ({exc.code.value}): {exc.message}", file=sys.stderr)
        return 2
    report = verify(model_dir, checksums=args.checksums, manifest=manifest, extra=expected_base_files(model_dir))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print_report(report)
    return 0 if report.complete else 1


def run_download(args: argparse.Namespace) -> int:
    from worker.models.download import download
    from worker.models.manifest import INSTANTID_MANIFEST
    from worker.models.store import verify

    settings = _settings()
    model_dir = args.model_dir or settings.model_dir
    token = settings.hf_token.get_secret_value() if settings.hf_token else None
    only = _parts(args.only)
    try:
        manifest = INSTANTID_MANIFEST.plus(_parts(args.with_parts))
        announce_licences(manifest.select(only))
        download(model_dir, token=token, progress=not args.no_progress, only=only, manifest=manifest)
        report = verify(model_dir, only=only, manifest=manifest)
    except IdentityBodyError as exc:
        print(f"error ({exc.code.value}): {exc.message}", file=sys.stderr)
        return 1
    print_report(report)
    return 0 if report.complete else 1


def _parts(text: str | None) -> list[str] | None:
    return text.split(",") if text else None


def announce_licences(manifest) -> None:
    """Print each part's licence before anything is fetched: whoever downloads decides."""
    print("Model licences (read them before you deploy; the images inherit their terms):")
    for line in manifest.licence_lines():
        print(f"  {line}")
    sys.stdout.flush()


def run_add_base(args: argparse.Namespace) -> int:
    from worker.models.add_base import add_base

    model_dir = args.model_dir or _settings().model_dir
    try:
        added = add_base(model_dir, args.path, args.name)
    except IdentityBodyError as exc:
        print(f"error ({exc.code.value}): {exc.message}", file=sys.stderr)
        return 2 if exc.code.value in ("not_sdxl_checkpoint", "checkpoint_not_found") else 1
    print(f"added base {added.name} ({added.layout}, sha256 {added.digest}) in {added.folder}; "
          f"jobs pick it with base_model={added.name} once the workers restart")
    return 0


def run_build_tiny(args: argparse.Namespace) -> int:
    # the tiny builder imports torch/diffusers: only when this command runs
    from worker.tiny.model_dir import build_tiny_model_dir

    out_dir = Path(args.dir or _settings().tiny_model_dir)
    build_tiny_model_dir(out_dir)
    print(f"tiny model folder written to {out_dir}")
    return 0
