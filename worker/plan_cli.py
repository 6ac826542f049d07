"""``idbody plan [--vram-gb N]``: the memory plan a gpu worker would pick, before anything loads.

Arithmetic only (worker.engine.memory_plan, from the download manifest's sizes): no weights are
read and, with ``--vram-gb``, torch is not imported, so an operator can ask about a card before
buying it. Without ``--vram-gb`` it asks this machine's GPU for its free memory.

Example::

    idbody plan --vram-gb 4                       # the seed's RTX 3050: group-offload, fp8, tiling
    idbody plan --vram-gb 80 --width 768 --height 1024 --json
"""

from __future__ import annotations

import argparse
import json
import math

HOW = {
    "resident": "every network on the GPU in fp16",
    "resident-fp8": "every network on the GPU; the fp8 ones cast to fp16 layer by layer as they run",
    "model-offload": "one network at a time on the GPU (diffusers' model offload)",
    "group-offload": "streamed from the CPU layer by layer (diffusers' group offloading, CUDA streams)",
    "cpu": "on the CPU (no CUDA device)",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    from worker.engine.memory_plan import PLACEMENTS

    parser = subparsers.add_parser(
        "plan", help="Print the memory plan a gpu worker would pick on a card, without loading weights.",
        description="Print the memory plan (where each network lives, fp8 storage, VAE tiling, images per "
                    "denoise pass) and its predicted peak that a gpu worker would pick, from the released "
                    "models' sizes: no weights are loaded. The settings (IDBODY_MEMORY_PLAN, "
                    "IDBODY_MAX_BATCH_IMAGES, IDBODY_DEFAULT_WIDTH/HEIGHT) apply as in the worker.",
    )
    parser.add_argument("--vram-gb", type=float, default=None, metavar="N",
                        help="The card's memory in GiB (default: ask this machine's GPU for its free memory).")
    parser.add_argument("--width", type=int, default=None, help="Job width planned for (default: the worker's default size).")
    parser.add_argument("--height", type=int, default=None, help="Job height planned for.")
    parser.add_argument("--plan", default=None, choices=("auto", *PLACEMENTS),
                        help="Force a plan, as IDBODY_MEMORY_PLAN does (default: the setting, auto).")
    parser.add_argument("--with", dest="with_parts", default=None, metavar="PARTS",
                        help="Count optional parts too: pose (the pose ControlNet).")
    parser.add_argument("--json", action="store_true", help="Print the plan as JSON.")
    parser.set_defaults(func=run_plan)


def run_plan(args: argparse.Namespace) -> int:
    from shared.settings import get_settings
    from shared.size_presets import FULL_BODY_BUCKET
    from worker.engine.memory_plan import (
        Shape,
        card_free_gib,
        choose_plan,
        cpu_plan,
        face_models_gib,
        manifest_weights,
    )

    settings = get_settings()
    width = args.width or settings.default_width or FULL_BODY_BUCKET[0]
    height = args.height or settings.default_height or FULL_BODY_BUCKET[1]
    face_gib = face_models_gib(on_gpu="CUDAExecutionProvider" in settings.onnx_providers)
    if args.vram_gb is not None:
        card, free = f"{args.vram_gb:g} GiB card", card_free_gib(args.vram_gb, face_gib)
    else:
        card, free = _this_card(face_gib)
    if free is None:
        plan = cpu_plan(settings.max_batch_images)
    else:
        pose = "pose" in (args.with_parts or "").split(",")
        plan = choose_plan(manifest_weights(pose=pose), free, Shape(width, height), settings.max_batch_images,
                           args.plan or settings.memory_plan, settings.engine_compile)
    if args.json:
        print(json.dumps({"card": card, "free_gib": None if free is None else round(free, 2), **plan.report()}))
        return 0
    print(_text(plan, card, free, face_gib))
    return 0


def _this_card(face_gib: float) -> tuple[str, float | None]:
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device", None
    free, _total = torch.cuda.mem_get_info()
    return f"{torch.cuda.get_device_name()} (free now)", free / 2**30 - face_gib


def _text(plan, card: str, free: float | None, face_gib: float) -> str:
    lines = [f"card: {card}"]
    if free is not None:
        lines[0] += f", {free:.1f} GiB free for the engine (less the CUDA context and {face_gib:.2f} GiB of face models)"
    lines += [f"plan: {plan.name} ({plan.reason})", f"  networks: {HOW[plan.name]}"]
    if plan.device == "cuda":
        job = 4
        passes = math.ceil(job / plan.rows_per_pass)
        lines += [f"  fp8 storage: {', '.join(plan.fp8) or 'none'}",
                  f"  VAE tiling: {'on (512 px tiles, one image at a time)' if plan.vae_tiling else 'off'}",
                  (f"  rows per pass: {plan.rows_per_pass} at {plan.shape.width}x{plan.shape.height} "
                   f"(a {job}-image job runs in {passes} pass{'es' if passes > 1 else ''})"),
                  f"  predicted peak: {plan.predicted_peak_gib:.1f} GiB of a {plan.budget_gib:.1f} GiB budget",
                  f"  compile: {'allowed (IDBODY_ENGINE_COMPILE)' if plan.compile else 'skipped'}"]
    else:
        lines.append(f"  rows per pass: {plan.rows_per_pass}")
    lines += [f"  note: {note}" for note in plan.notes]
    return "\n".join(lines)
