"""Each memory plan under an emulated card: the phase of ``python -m bench.pipeline --full-size``
that measures the plans ``worker.engine.memory_plan`` picks for 4, 8, 12 and 24 GiB cards.

On a CUDA GPU each card runs in its own process (an out-of-memory error or a crash costs that card
alone): the architecture-exact random fp16 engine is built, planned as if the card had N GiB
(``DevicePolicy.card_gib``), placed by that plan, then ``torch.cuda.set_per_process_memory_fraction``
caps the allocator at N GiB and the full-body default runs: 4 images at 832x1216, fast mode (LCM 5
steps, guidance 1.5), split into the plan's passes. Recorded: seconds per image, the measured peak
(``torch.cuda.max_memory_allocated``) against the predicted one, and whether it ran out of memory.
The fraction caps what torch allocates, not the CUDA context, which the plan already sets aside.

``--smoke`` (the CPU) cannot emulate a card: it applies the same four plans, moved to the CPU
(onload = offload device, no streams), to the tiny engine and runs 2 images of 64 px, 2 steps,
which proves the phase and each plan's hooks run; its timings mean nothing.

    python -m bench.memory_plans --card-gib 4 --out /tmp/card4.json      # one card (what the phase runs)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

CARDS_GIB = (4, 8, 12, 24)
FULL_BODY = (832, 1216)
JOB_IMAGES = 4
RESERVE_S = 170          # what the full-size bench keeps for this phase out of --budget-s
CARD_LIMIT_S = 75        # one card's process at most


def card_plans(width: int, height: int) -> dict[int, Any]:
    """The plan each emulated card gets for the released models (the arithmetic alone)."""
    from worker.engine.memory_plan import Shape, card_free_gib, choose_plan, manifest_weights

    return {card: choose_plan(manifest_weights(), card_free_gib(card), Shape(width, height)) for card in CARDS_GIB}


def run(setup, out: Path) -> dict[str, Any]:
    """Measure every card within ``setup``'s deadline and add ``memory_plans`` to the JSON at ``out``."""
    results: dict[str, Any] = {}
    for card in CARDS_GIB:
        if setup.smoke:
            results[f"{card} GiB"] = _smoke_card(card)
        elif setup.left_s() < 20:
            results[f"{card} GiB"] = {"skipped": f"budget spent ({setup.left_s():.0f} s left)"}
        else:
            results[f"{card} GiB"] = _card_process(card, min(CARD_LIMIT_S, setup.left_s() - 5), out)
        _write(out, results, smoke=setup.smoke)
        _print(card, results[f"{card} GiB"])
    return results


def _write(out: Path, results: dict[str, Any], smoke: bool) -> None:
    data = json.loads(out.read_text()) if out.is_file() else {}
    data["memory_plans"] = {"cards": results, "job": {"images": JOB_IMAGES, "size": list(FULL_BODY),
                                                      "mode": "fast", "steps": 5, "guidance": 1.5}}
    if smoke:
        data["memory_plans"]["note"] = ("CPU smoke run: no card emulated (set_per_process_memory_fraction "
                                        "needs CUDA); each card's plan applied on the CPU to the tiny engine")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2, default=str))


def _print(card: int, r: dict[str, Any]) -> None:
    plan = r.get("plan", {})
    if "s_per_image" in r:
        peak = f", peak {r['peak_gib']:.2f} GiB (predicted {plan.get('predicted_peak_gib')})" if r.get("peak_gib") else ""
        print(f"memory plan, {card} GiB card: {plan.get('name')} {plan.get('rows_per_pass')} rows/pass, "
              f"{r['s_per_image']:.3f} s/image{peak}")
    else:
        print(f"memory plan, {card} GiB card: {r}")


def _card_process(card: int, limit_s: float, out: Path) -> dict[str, Any]:
    result_file = out.with_name(f"{out.stem}.card{card}.json")
    cmd = [sys.executable, "-m", "bench.memory_plans", "--card-gib", str(card), "--out", str(result_file)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=limit_s, check=False)
    except subprocess.TimeoutExpired:
        return {"skipped": f"did not finish within {limit_s:.0f} s"}
    if result_file.is_file():
        return json.loads(result_file.read_text())
    return {"failed": f"exit {done.returncode}", "stderr_tail": done.stderr[-2000:]}


def measure_card(card: int) -> dict[str, Any]:
    """In this process: build, plan as a ``card`` GiB card, cap the allocator, run the job."""
    import torch

    from bench.full_size import assemble_engine
    from shared.settings import Settings
    from worker.engine.devices import DevicePolicy

    started = time.perf_counter()
    policy = replace(DevicePolicy.decide(Settings(_env_file=None, device="cuda")), card_gib=float(card),
                     plan_size=FULL_BODY)
    engine = assemble_engine(policy)
    plan = engine.memory_plan
    torch.cuda.empty_cache()
    total = torch.cuda.mem_get_info()[1]
    torch.cuda.set_per_process_memory_fraction(min(1.0, card * 2**30 / total))
    built_s = time.perf_counter() - started
    result: dict[str, Any] = {"plan": plan.report(), "gpu": torch.cuda.get_device_name(), "build_s": built_s}
    try:
        _run_job(engine, plan, images=1, steps=1)     # warm-up
        torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        passes = _run_job(engine, plan, images=JOB_IMAGES, steps=5)
        seconds = time.perf_counter() - t
        result.update(s_per_image=seconds / JOB_IMAGES, s_per_call=seconds, passes=passes,
                      peak_gib=torch.cuda.max_memory_allocated() / 2**30, out_of_memory=False)
    except torch.OutOfMemoryError as exc:
        result.update(out_of_memory=True, error=str(exc)[:500])
    return result


def _run_job(engine, plan, images: int, steps: int) -> list[int]:
    """The job split into the plan's passes (the runner's rows-per-pass rule, applied here)."""
    from worker.engine.generation import generate_images

    width, height = FULL_BODY
    passes = plan.passes(images, width, height)
    done = 0
    for rows in passes:
        generate_images(engine, _inputs(width, height, rows, steps, seed=done))
        done += rows
    return passes


def _inputs(width: int, height: int, images: int, steps: int, seed: int):
    import numpy as np

    from worker.engine.generation import GenerationInputs
    from worker.face.keypoints import draw_kps

    kps = np.array([[0.4, 0.2], [0.6, 0.2], [0.5, 0.27], [0.42, 0.33], [0.58, 0.33]], dtype=np.float32)
    return GenerationInputs(prompt="full body photo of a person standing", negative_prompt="blurry", seed=seed,
                            face_embedding=np.random.default_rng(0).normal(size=512).astype(np.float32),
                            kps_image=draw_kps(width, height, kps * np.array([width, height], dtype=np.float32)),
                            num_images=images, width=width, height=height, mode="fast", steps=steps, guidance=1.5)


def _smoke_card(card: int) -> dict[str, Any]:
    """The card's plan applied on the CPU to the tiny engine: the hooks run, nothing is emulated."""
    from bench.fast_engine import Setup, build_engine
    from worker.engine.generation import generate_images

    plan = replace(card_plans(*FULL_BODY)[card], device="cpu")
    setup = Setup(smoke=True, device="cpu", width=64, height=64, repeats=1, cache_dir=Path("/tmp"),
                  deadline=time.monotonic() + 600)
    engine = build_engine(setup)
    engine.policy.save_memory(engine.pipe, plan)
    t = time.perf_counter()
    images = generate_images(engine, _inputs(64, 64, 2, 2, seed=0)).images
    seconds = time.perf_counter() - t
    return {"plan": plan.report(), "s_per_image": seconds / len(images), "images": len(images),
            "peak_gib": None, "emulated": False}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="One emulated card of the memory-plan phase (needs CUDA).")
    parser.add_argument("--card-gib", type=int, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    result = measure_card(args.card_gib)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
