"""Per-stage timings and peak memory of the engine.

Default: the tiny profile on this machine through the whole Python API (face analysis of a real
photo -> prompt -> kps -> 4 x 128 px), fast (LCM) and quality (Euler + guidance) modes.
``--full-size``: architecture-exact SDXL + IdentityNet + IP-Adapter with random fp16 weights on a
CUDA GPU, 4 images 768 wide x 1024 high at LCM 4 steps and at 30 steps with guidance 5.

    python -m bench.pipeline                  # writes bench/results/pipeline.json
    python -m bench.pipeline --full-size      # writes bench/results/pipeline_full_size.json
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


def bench_full_size(repeats: int) -> dict:
    import numpy as np
    import torch

    from bench.full_size import build_full_size_engine
    from shared.settings import Settings
    from worker.engine.devices import DevicePolicy
    from worker.engine.generation import GenerationInputs, generate_images
    from worker.face.keypoints import draw_kps, retarget_kps

    if not torch.cuda.is_available():
        print("--full-size needs a CUDA GPU; none is visible here. Nothing was measured.", file=sys.stderr)
        raise SystemExit(2)
    engine = build_full_size_engine(DevicePolicy.decide(Settings(_env_file=None, device="cuda")))
    width, height = 768, 1024
    portrait = np.array([[180, 200], [280, 200], [230, 260], [190, 320], [270, 320]], dtype=np.float32)
    kps_image = draw_kps(width, height, retarget_kps(portrait, width, height, "standing"))
    embedding = np.random.default_rng(0).normal(size=512).astype(np.float32)
    cases = {"lcm 4 steps": dict(mode="fast", steps=4, guidance=0.0),
             "euler 30 steps g5": dict(mode="quality", steps=30, guidance=5.0)}
    results = {}
    for name, kw in cases.items():
        inputs = GenerationInputs(prompt="full body photo of a person standing", negative_prompt="blurry",
                                  seed=0, face_embedding=embedding, kps_image=kps_image, num_images=4,
                                  width=width, height=height, **kw)
        generate_images(engine, GenerationInputs(**{**inputs.__dict__, "steps": 1}))  # warm-up
        torch.cuda.reset_peak_memory_stats()
        runs = [generate_images(engine, inputs).timings for _ in range(repeats)]
        results[name] = {**_summary(runs), "peak_vram_mib": torch.cuda.max_memory_allocated() / 2**20}
    _print_table(f"full-size random fp16 on {torch.cuda.get_device_name()}, 4 x {width}x{height}", results, 4)
    for name, r in results.items():
        print(f"peak VRAM {name}: {r['peak_vram_mib']:.0f} MiB")
    return {"profile": "full-size-random-fp16", "gpu": torch.cuda.get_device_name(), "repeats": repeats,
            "images": 4, "size": [width, height], "cases": results, **_peak_memory()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full-size", action="store_true", help="architecture-exact random fp16 models on CUDA")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (tiny profile)")
    args = parser.parse_args(argv)
    report = bench_full_size(args.repeats) if args.full_size else bench_tiny(args.repeats, args.threads)
    report.update(machine=platform.machine(), python=platform.python_version(), command=" ".join(sys.argv))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / ("pipeline_full_size.json" if args.full_size else "pipeline.json")
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
