"""Per-stage timings and peak memory of the engine.

Default: the tiny profile on this machine through the whole Python API (face analysis of a real
photo -> prompt -> kps -> 4 x 128 px), fast (LCM) and quality (Euler + guidance) modes.
``--full-size``: architecture-exact SDXL + IdentityNet + IP-Adapter with random fp16 weights on a
CUDA GPU at 768 wide x 1024 high: the plain eager engine vs the fast engine (bench.fast_engine).

    python -m bench.pipeline                          # writes bench/results/pipeline.json
    python -m bench.pipeline --full-size              # writes bench/results/pipeline_full_size.json
    python -m bench.pipeline --full-size --smoke      # the same bench on the CPU, tiny models
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def _photo():
    import insightface
    from PIL import Image

    path = Path(insightface.__file__).parent / "data" / "images" / "Tom_Hanks_54745.png"
    return Image.open(path).convert("RGB").resize((448, 448), Image.BICUBIC)


def _summary(runs: list[dict]) -> dict:
    """Median of each stage over the timed runs."""
    steps = [statistics.median(r["denoise_step_s"]) for r in runs]
    out = {k: statistics.median(r[k] for r in runs) for k in runs[0] if not isinstance(runs[0][k], list)}
    out["denoise_step_s"] = statistics.median(steps)
    out["steps"] = len(runs[0]["denoise_step_s"])
    return out


def _peak_memory() -> dict:
    import torch

    peak = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        peak["peak_vram_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return peak


def _print_table(title: str, cases: dict[str, dict], per_image: int) -> None:
    stages = ["face_analysis_s", "prompt_encode_s", "denoise_step_s", "decode_s", "generate_s", "identity_score_s",
              "total_s"]
    names = list(cases)
    print(f"\n{title}")
    print(f"{'stage':<22}" + "".join(f"{n:>28}" for n in names))
    for stage in stages:
        row = [cases[n].get(stage) for n in names]
        print(f"{stage:<22}" + "".join(f"{'n/a' if v is None else f'{v:.4f}':>28}" for v in row))
    print(f"{'steps':<22}" + "".join(f"{cases[n]['steps']:>28}" for n in names))
    print(f"{'s per image':<22}" + "".join(f"{cases[n]['generate_s'] / per_image:>28.4f}" for n in names))


def bench_tiny(repeats: int, threads: int | None) -> dict:
    import torch

    from shared.settings import Settings
    from worker.identity_pipeline import IdentityPipeline

    if threads:
        torch.set_num_threads(threads)
    settings = Settings(_env_file=None, model_profile="tiny", device="cpu",
                        onnx_providers=["CPUExecutionProvider"])
    pipeline = IdentityPipeline(settings).load_models()
    photo = _photo()
    cases = {"fast 4x128 lcm-4": dict(mode="fast", num_inference_steps=4),
             "quality 4x128 euler-8 g5": dict(mode="quality", num_inference_steps=8, guidance_scale=5.0)}
    results = {}
    for name, kw in cases.items():
        pipeline.generate(photo, num_images=4, width=128, height=128, seed=0, **kw)  # warm-up
        runs = [pipeline.generate(photo, num_images=4, width=128, height=128, seed=0, **kw)["timings"]
                for _ in range(repeats)]
        results[name] = _summary(runs)
    _print_table(f"tiny profile, {torch.get_num_threads()} torch threads, median of {repeats}", results, 4)
    return {"profile": "tiny", "torch_threads": torch.get_num_threads(), "repeats": repeats,
            "images": 4, "size": [128, 128], "cases": results, **_peak_memory()}


def bench_full_size(args) -> int:
    """Eager baseline vs fast engine (bench.fast_engine), JSON rewritten after every case."""
    import time

    import torch

    from bench.fast_engine import Setup, restart_probe, run

    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("--full-size needs a CUDA GPU; none is visible here (--smoke runs the bench on the CPU). "
              "Nothing was measured.", file=sys.stderr)
        return 2
    size = (64, 64) if args.smoke else (768, 1024)
    setup = Setup(smoke=args.smoke, device=device, width=size[0], height=size[1],
                  repeats=1 if args.smoke else args.repeats, cache_dir=Path(args.cache_dir),
                  deadline=time.monotonic() + args.budget_s, quick=args.quick)
    out = Path(args.out) if args.out else RESULTS / ("pipeline_smoke.json" if args.smoke else "pipeline_full_size.json")
    if args.restart_probe:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(restart_probe(setup), indent=2))
        return 0
    run(setup, out)
    print(f"\nwrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full-size", action="store_true", help="architecture-exact random fp16 models on CUDA: "
                        "eager baseline vs fast engine, micro-batching, compile and warm restart")
    parser.add_argument("--smoke", action="store_true", help="with --full-size: the same bench on the CPU with tiny "
                        "models (checks the bench runs; its timings mean nothing)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (tiny profile)")
    parser.add_argument("--budget-s", type=float, default=460, help="--full-size: seconds the whole run may take; "
                        "the warm-restart probe gets what is left")
    parser.add_argument("--cache-dir", default="/tmp/idbody-bench-compile-cache", help="--full-size: compile cache")
    parser.add_argument("--out", default=None, help="--full-size: JSON path")
    parser.add_argument("--quick", action="store_true", help="--full-size: eager vs fast engine without compiling, "
                        "no x8 case, no restart probe (fits a short GPU lease)")
    parser.add_argument("--restart-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.full_size or args.restart_probe:
        return bench_full_size(args)
    report = bench_tiny(args.repeats, args.threads)
    report.update(machine=platform.machine(), python=platform.python_version(), command=" ".join(sys.argv))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "pipeline.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
