"""What one job costs on the tiny profile at the sizes the web page offers: 4 images, the default
fast mode (LCM, 8 steps), through the whole Python API on this machine's CPU.

Wall seconds swing with whatever else runs on the machine; CPU seconds of this process (all its
threads) do not, so both are reported: on idle cores a step takes about its CPU seconds divided by
the torch threads.

    python -m bench.tiny_sizes                # writes bench/results/tiny_sizes.json
    python -m bench.tiny_sizes --sizes 768x1024 --images 1
    python -m bench.tiny_sizes --threads 1 --steps 3      # CPU seconds per step on a busy machine
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import time

from bench.pipeline import _photo
from bench.report_file import write_report
from shared.size_presets import SIZE_PRESETS


def bench_sizes(sizes: list[tuple[int, int]], images: int, steps: int, threads: int | None) -> dict:
    import torch

    if threads:
        torch.set_num_threads(threads)
    from shared.settings import Settings
    from worker.identity_pipeline import IdentityPipeline

    settings = Settings(_env_file=None, model_profile="tiny", device="cpu",
                        onnx_providers=["CPUExecutionProvider"])
    t = time.perf_counter()
    pipeline = IdentityPipeline(settings).load_models()
    load_s = time.perf_counter() - t
    photo = _photo()
    pipeline.generate(photo, num_images=1, width=64, height=64, seed=0, num_inference_steps=1)  # warm-up
    rows = {}
    for width, height in sizes:
        cpu_marks: list[float] = []
        cpu_start = time.process_time()
        timings = pipeline.generate(photo, num_images=images, width=width, height=height, seed=0,
                                    num_inference_steps=steps, progress=_cpu_clock(cpu_marks))["timings"]
        cpu_steps = [b - a for a, b in itertools.pairwise(cpu_marks)]
        rows[f"{width}x{height}"] = {
            "denoise_step_s": statistics.median(timings["denoise_step_s"]),
            "denoise_step_cpu_s": statistics.median(cpu_steps) if cpu_steps else None,
            "decode_s": timings["decode_s"], "total_s": timings["total_s"],
            "total_cpu_s": time.process_time() - cpu_start,
        }
    print(f"\ntiny profile, {images} images, {steps} steps, {torch.get_num_threads()} torch threads, "
          f"load average {os.getloadavg()[0]:.2f}; pipeline load {load_s:.2f} s")
    print(f"{'size':<12}{'s per step':>12}{'CPU s/step':>12}{'decode s':>12}{'job s':>12}{'job CPU s':>12}")
    for name, row in rows.items():
        print(f"{name:<12}{row['denoise_step_s']:>12.3f}{row['denoise_step_cpu_s'] or 0:>12.3f}"
              f"{row['decode_s']:>12.3f}{row['total_s']:>12.2f}{row['total_cpu_s']:>12.2f}")
    return {"profile": "tiny", "images": images, "steps": steps, "load_s": load_s,
            "torch_threads": torch.get_num_threads(), "sizes": rows}


def _cpu_clock(marks: list[float]):
    """A progress callback that notes this process's CPU seconds after every step."""
    return lambda step, total: marks.append(time.process_time())


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    return int(width), int(height)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="*", type=_size, default=list(SIZE_PRESETS),
                        help="WIDTHxHEIGHT ... (default: the page's presets)")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads; 1 makes CPU seconds a fair measure on a busy machine "
                             "(idle threads of a parallel region spin, and that counts as CPU time)")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    report = bench_sizes(args.sizes, args.images, args.steps, args.threads)
    report.update(load_average_before=load_before, load_average_after=os.getloadavg()[0])
    write_report("tiny_sizes", report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
