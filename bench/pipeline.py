"""Per-stage timings and peak memory of the engine.

Default: the tiny profile on this machine through the whole Python API (face analysis of a real
photo -> prompt -> kps -> 4 x 128 px), fast (LCM) and quality (Euler + guidance) modes.
``--full-size``: architecture-exact SDXL + IdentityNet + IP-Adapter with random fp16 weights on a
CUDA GPU at 768 wide x 1024 high: the plain eager engine vs the fast engine (bench.fast_engine),
then each memory plan under an emulated 4/8/12/24 GiB card (bench.memory_plans).
``--full-body``: the same GPU models at the full-body default 832x1216, 4 images: fast mode as it is
now (LCM 5 steps, guidance 1.5) against before (LCM 8 steps, guidance 0), with and without the face
region, quality (Euler 30 steps, guidance 5), and the seconds the face-detail pass adds per image.

    python -m bench.pipeline                          # writes bench/results/pipeline.json
    python -m bench.pipeline --full-size              # writes bench/results/pipeline_full_size.json
    python -m bench.pipeline --full-size --smoke      # the same bench on the CPU, tiny models
    python -m bench.pipeline --full-body              # writes bench/results/pipeline_full_body.json
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
from pathlib import Path

from bench.report_file import RESULTS, write_report


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

    from bench.compile_phase import restart_probe
    from bench.fast_engine import Setup, run

    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("--full-size needs a CUDA GPU; none is visible here (--smoke runs the bench on the CPU). "
              "Nothing was measured.", file=sys.stderr)
        return 2
    size = (64, 64) if args.smoke else (768, 1024)
    setup = Setup(smoke=args.smoke, device=device, width=size[0], height=size[1],
                  repeats=1 if args.smoke else args.repeats, cache_dir=Path(args.cache_dir),
                  deadline=time.monotonic() + (args.budget_s or (3600 if args.smoke else 460)), quick=args.quick)
    out = Path(args.out) if args.out else RESULTS / ("pipeline_smoke.json" if args.smoke else "pipeline_full_size.json")
    if args.restart_probe:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(restart_probe(setup), indent=2))
        return 0
    from dataclasses import replace

    from bench import memory_plans

    run(replace(setup, deadline=setup.deadline - (0 if args.smoke else memory_plans.RESERVE_S)), out)
    memory_plans.run(setup, out)
    print(f"\nwrote {out}")
    return 0


def bench_full_body(repeats: int) -> dict:
    """The full-body defaults on the GPU: fast mode now vs before, face region on/off, quality,
    and the face-detail pass."""
    import numpy as np
    import torch

    from bench.full_size import build_full_size_engine
    from shared.settings import Settings
    from worker.engine.devices import DevicePolicy
    from worker.engine.face_geometry import layout_face_box, region_mask
    from worker.engine.generation import GenerationInputs, generate_images
    from worker.engine.output_size import FULL_BODY_BUCKET
    from worker.face.keypoints import draw_kps, retarget_kps

    if not torch.cuda.is_available():
        print("--full-size needs a CUDA GPU; none is visible here. Nothing was measured.", file=sys.stderr)
        raise SystemExit(2)
    engine = build_full_size_engine(DevicePolicy.decide(Settings(_env_file=None, device="cuda")))
    width, height = FULL_BODY_BUCKET
    kps = retarget_kps(PORTRAIT_KPS, width, height, "standing")
    region = region_mask((width, height), layout_face_box(PORTRAIT_KPS, PORTRAIT_BOX, kps, (width, height)))
    embedding = np.random.default_rng(0).normal(size=512).astype(np.float32)
    base = dict(prompt="full body photo of a person standing", negative_prompt="cropped, close-up, portrait",
                seed=0, face_embedding=embedding, kps_image=draw_kps(width, height, kps), num_images=4,
                width=width, height=height)
    cases = {"fast lcm 5 g1.5 (default)": dict(mode="fast", steps=5, guidance=1.5, face_region=region),
             "fast lcm 8 g0 (before)": dict(mode="fast", steps=8, guidance=0.0, face_region=region),
             "fast lcm 5 g1.5 no region": dict(mode="fast", steps=5, guidance=1.5),
             "euler 30 steps g5": dict(mode="quality", steps=30, guidance=5.0, face_region=region)}
    results, images = {}, {}
    for name, kw in cases.items():
        inputs = GenerationInputs(**base, **kw)
        generate_images(engine, GenerationInputs(**{**inputs.__dict__, "steps": 1}))  # warm-up
        torch.cuda.reset_peak_memory_stats()
        outs = [generate_images(engine, inputs) for _ in range(repeats)]
        images[name] = outs[-1].images
        results[name] = {**_summary([o.timings for o in outs]), "peak_vram_mib": torch.cuda.max_memory_allocated() / 2**20}
    _print_table(f"full-size random fp16 on {torch.cuda.get_device_name()}, 4 x {width}x{height}", results, 4)
    for name, r in results.items():
        print(f"peak VRAM {name}: {r['peak_vram_mib']:.0f} MiB")
    detail = bench_face_detail(engine, images["fast lcm 5 g1.5 (default)"], kps, embedding, repeats)
    return {"profile": "full-size-random-fp16", "gpu": torch.cuda.get_device_name(), "repeats": repeats,
            "images": 4, "size": [width, height], "cases": results, "face_detail": detail, **_peak_memory()}


PORTRAIT_KPS = [[180, 200], [280, 200], [230, 260], [190, 320], [270, 320]]
PORTRAIT_BOX = [130, 110, 330, 380]


def bench_face_detail(engine, images, kps, embedding, repeats: int) -> dict:
    """Seconds the face-detail pass adds per image (fast mode, strength 0.4, 1024 px crops). Random
    weights draw no faces, so the detector is replaced by the layout's own face (box and keypoints
    where the IdentityNet put the head): the img2img work is the real one; detection (antelopev2 on
    the GPU, measured with the face analysis) is not in this number."""
    import numpy as np
    import torch

    from worker.engine.face_detail import FaceDetailInputs, refine_faces
    from worker.engine.face_geometry import layout_face_box

    box = np.asarray(layout_face_box(PORTRAIT_KPS, PORTRAIT_BOX, kps, images[0].size, margin=1.0))
    layout_face = type("LayoutFace", (), {"bbox": box, "kps": np.asarray(kps)})()
    inputs = FaceDetailInputs(prompt="close-up photo of the face of a person", negative_prompt="blurry",
                              face_embedding=embedding, seed=0, strength=0.4, mode="fast", steps=5, guidance=1.5)
    refine_faces(engine, images[:1], lambda _image: layout_face, inputs)   # warm-up
    torch.cuda.reset_peak_memory_stats()
    runs = [refine_faces(engine, images, lambda _image: layout_face, inputs).timings for _ in range(repeats)]
    per_image = statistics.median(r["face_detail_s"] for r in runs) / len(images)
    out = {"seconds_per_image": per_image, "steps_per_image": runs[0]["face_detail_steps"] / len(images),
           "crop_px": int(box[2] - box[0]), "peak_vram_mib": torch.cuda.max_memory_allocated() / 2**20}
    print(f"\nface-detail pass, fast 5 steps x strength 0.4, guidance 1.5: {per_image:.3f} s per image "
          f"({out['steps_per_image']:.0f} img2img steps at 1024 px), peak VRAM {out['peak_vram_mib']:.0f} MiB")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full-size", action="store_true", help="architecture-exact random fp16 models on CUDA: "
                        "eager baseline vs fast engine, micro-batching, compile, warm restart, memory plans under emulated cards")
    parser.add_argument("--smoke", action="store_true", help="with --full-size: the same bench on the CPU with tiny "
                        "models, compiled with inductor: the CPU's compile figures (graph breaks, recompiles, first compile vs "
                        "restart); its generation timings mean nothing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (tiny profile)")
    parser.add_argument("--budget-s", type=float, default=None, help="--full-size: seconds the whole run may take "
                        "(default 460 on a GPU, 3600 with --smoke, whose inductor compile on a CPU takes minutes); "
                        "the warm-restart probe gets what is left")
    parser.add_argument("--cache-dir", default="/tmp/idbody-bench-compile-cache", help="--full-size: compile "
                        "cache, emptied before the first compile (which is then a cold one)")
    parser.add_argument("--out", default=None, help="--full-size: JSON path")
    parser.add_argument("--quick", action="store_true", help="--full-size: eager vs fast engine without compiling, "
                        "no x8 case, no restart probe (fits a short GPU lease)")
    parser.add_argument("--full-body", action="store_true", help="the full-body defaults at 832x1216 on CUDA: fast "
                        "mode now vs before, face region on/off, quality, the face-detail pass")
    parser.add_argument("--restart-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.full_size or args.restart_probe:
        return bench_full_size(args)
    if args.full_body:
        write_report("pipeline_full_body", bench_full_body(args.repeats))
        return 0
    write_report("pipeline", bench_tiny(args.repeats, args.threads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
