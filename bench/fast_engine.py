"""The plain eager engine (the baseline) against the fast engine, in one run on one GPU:
``python -m bench.pipeline --full-size``.

Order, so that a run cut short still returns the most useful numbers (the JSON is rewritten
after every case): matmul peak -> eager cases -> fast engine uncompiled (prepare, cases,
micro-batching: 8 single-image jobs batched vs one by one) -> torch.compile + CUDA-graph warm-up
per shape -> compiled cases and micro-batching -> warm restart in a second process with the
compile cache present.

``--smoke`` runs the same code on the CPU with tiny random models, 64 px, two steps, three
micro-batched jobs, compiled with inductor (real code generation; bench.compile_phase): a check
that the bench works before GPU time is spent on it, and the compile figures of the CPU (graph
breaks, recompiles, first compile vs restart). Its generation timings mean nothing.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

# The arithmetic floor (bench/README.md): FLOPs per 768x1024 image.
UNET_IDNET_FLOP = 7.1e12     # one UNet + IdentityNet pass
VAE_DECODE_FLOP = 7.8e12     # one VAE decode


@dataclass(frozen=True)
class Case:
    name: str
    mode: str
    steps: int
    guidance: float
    images: int

    def floor_s(self, peak_flops: float) -> float:
        passes = self.images * (2 if self.guidance > 1 else 1)
        return (self.steps * passes * UNET_IDNET_FLOP + self.images * VAE_DECODE_FLOP) / peak_flops


CASES = [Case("fast 4 steps x1", "fast", 4, 0.0, 1), Case("fast 4 steps x4", "fast", 4, 0.0, 4),
         Case("fast 4 steps x8", "fast", 4, 0.0, 8), Case("quality 30 steps x4", "quality", 30, 5.0, 4)]


class Report:
    """The run's JSON, rewritten after every addition (a time-out still leaves what was measured)."""

    def __init__(self, path: Path, **header: Any) -> None:
        self.path, self.data = path, dict(header)
        self.write()

    def add(self, section: str, name: str, value: Any) -> None:
        self.data.setdefault(section, {})[name] = value
        self.write()

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str))
        tmp.replace(self.path)


@dataclass
class Setup:
    smoke: bool
    device: str
    width: int
    height: int
    repeats: int
    cache_dir: Path
    deadline: float            # time.monotonic() by which the run must end
    quick: bool = False        # fewer cases, no compile, no restart probe (a short GPU lease)

    def left_s(self) -> float:
        return self.deadline - time.monotonic()

    def scaled(self, case: Case) -> Case:
        return replace(case, steps=min(case.steps, 2)) if self.smoke else case


def build_engine(setup: Setup, seed: int = 0):
    """The plain engine: architecture-exact random fp16 models on CUDA, tiny ones for --smoke."""
    from bench.full_size import assemble_engine, build_full_size_engine
    from shared.settings import Settings
    from worker.engine.devices import DevicePolicy

    policy = DevicePolicy.decide(Settings(_env_file=None, device=setup.device))
    if not setup.smoke:
        return build_full_size_engine(policy, seed)
    from worker.tiny import model_dir as tiny

    unet = tiny._unet(seed)
    text = {"hidden_size": tiny.TEXT_HIDDEN, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "hidden_act": "gelu"}
    vae = {k: v for k, v in tiny._vae(seed).config.items() if not k.startswith("_")}
    return assemble_engine(policy, seed, unet_config={k: v for k, v in unet.config.items() if not k.startswith("_")},
                           vae_config=vae, text_configs=(text, {**text, "projection_dim": tiny.TEXT2_PROJECTION}))


def matmul_peak_flops(setup: Setup) -> float:
    """Measured dense matmul rate (fp16 on CUDA), the floor's denominator."""
    import torch

    n, dtype = (8192, torch.float16) if setup.device == "cuda" else (512, torch.float32)
    a, b = (torch.randn(n, n, device=setup.device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    reps = 10
    if setup.device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            a @ b
        end.record()
        end.synchronize()
        seconds = start.elapsed_time(end) / 1000
    else:
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        seconds = time.perf_counter() - t
    return 2 * n**3 * reps / seconds


def sample_inputs(setup: Setup, case: Case, seed: int = 0, person: int = 0):
    import numpy as np

    from worker.engine.generation import GenerationInputs
    from worker.face.keypoints import draw_kps

    w, h = setup.width, setup.height
    kps = np.array([[0.4, 0.2], [0.6, 0.2], [0.5, 0.27], [0.42, 0.33], [0.58, 0.33]], dtype=np.float32)
    face = np.random.default_rng(person).normal(size=512).astype(np.float32)
    return GenerationInputs(prompt="full body photo of a person standing", negative_prompt="blurry", seed=seed,
                            face_embedding=face, kps_image=draw_kps(w, h, kps * np.array([w, h], dtype=np.float32)),
                            num_images=case.images, width=w, height=h, mode=case.mode, steps=case.steps,
                            guidance=case.guidance)


def _reset_peak(setup: Setup) -> None:
    if setup.device == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats()


def _peak_mib(setup: Setup) -> float | None:
    if setup.device != "cuda":
        return None
    import torch

    return torch.cuda.max_memory_allocated() / 2**20


def time_case(engine, setup: Setup, case: Case, peak: float, warm: bool) -> dict[str, Any]:
    """Median seconds per call over ``setup.repeats`` calls (after a 1-step warm-up call when
    ``warm``), seconds per image, peak VRAM and the ratio to the FLOP floor."""
    from worker.engine.generation import generate_images

    case = setup.scaled(case)
    inputs = sample_inputs(setup, case)
    if warm:
        generate_images(engine, replace(inputs, steps=1))
    _reset_peak(setup)
    calls, timings = [], []
    for _ in range(setup.repeats):
        t = time.perf_counter()
        timings.append(generate_images(engine, inputs).timings)  # returns PIL images: the GPU is done
        calls.append(time.perf_counter() - t)
    seconds = statistics.median(calls)
    steps = [statistics.median(t["denoise_step_s"]) for t in timings]
    return {"s_per_call": seconds, "s_per_image": seconds / case.images, "calls_s": calls,
            "denoise_step_s": statistics.median(steps), "decode_s": statistics.median(t["decode_s"] for t in timings),
            "peak_vram_mib": _peak_mib(setup), "floor_s": case.floor_s(peak),
            "x_floor": seconds / case.floor_s(peak), "steps": case.steps, "images": case.images}


def microbatch(engine, setup: Setup, jobs: int = 8) -> dict[str, Any]:
    """``jobs`` single-image fast jobs (different people and seeds): one by one vs one pass."""
    from worker.engine.generation import BatchJob, generate_batch, generate_images

    case = setup.scaled(Case("fast 4 steps x1", "fast", 4, 0.0, 1))
    inputs = [sample_inputs(setup, case, seed=100 + i, person=i) for i in range(jobs)]
    generate_batch(engine, [BatchJob(j) for j in inputs])  # record this batch's CUDA graph first
    _reset_peak(setup)
    t = time.perf_counter()
    for job in inputs:
        generate_images(engine, job)
    one_by_one = time.perf_counter() - t
    t = time.perf_counter()
    results = generate_batch(engine, [BatchJob(j) for j in inputs])
    batched = time.perf_counter() - t
    failed = [repr(r.error) for r in results if r.error is not None]
    return {"jobs": jobs, "one_by_one_s": one_by_one, "batched_s": batched, "speedup": one_by_one / batched,
            "failed_jobs": failed, "peak_vram_mib": _peak_mib(setup)}


def make_fast_uncompiled(engine, setup: Setup, report: Report) -> None:
    from worker.engine.fast_mode import FastOptions, make_fast

    t = time.perf_counter()
    make_fast(engine, FastOptions(cache_dir=setup.cache_dir))
    report.add("fast_engine", "prepare_s", time.perf_counter() - t)


def run(setup: Setup, out: Path) -> Report:
    import diffusers
    import torch

    from bench.compile_phase import compile_and_warm, run_restart_probe

    gpu = torch.cuda.get_device_name() if setup.device == "cuda" else "cpu (smoke)"
    report = Report(out, gpu=gpu, torch=torch.__version__, diffusers=diffusers.__version__, smoke=setup.smoke,
                    size=[setup.width, setup.height], repeats=setup.repeats)
    peak = matmul_peak_flops(setup)
    report.add("floor", "matmul_peak_tflops", peak / 1e12)
    t = time.perf_counter()
    engine = build_engine(setup)
    report.add("floor", "build_random_models_s", time.perf_counter() - t)
    cases = [c for c in CASES if c.name != "fast 4 steps x8"] if setup.quick else CASES
    for case in cases:
        _guarded(report, "eager", case.name, lambda c=case: time_case(engine, setup, c, peak, warm=True))
    # The fast engine without compiling first: cheap, and what a run cut short by a long
    # compile still reports.
    make_fast_uncompiled(engine, setup, report)
    jobs = 3 if setup.smoke else 8
    _guarded(report, "microbatch", f"fast 4 steps, {jobs} jobs x1", lambda: microbatch(engine, setup, jobs))
    for case in cases:
        _guarded(report, "fast", case.name, lambda c=case: time_case(engine, setup, c, peak, warm=True))
    if setup.quick:
        print_table(report.data)
        return report
    if compile_and_warm(engine, setup, report):
        for case in CASES:
            _guarded(report, "compiled", case.name, lambda c=case: time_case(engine, setup, c, peak, warm=True))
        _guarded(report, "microbatch", f"compiled, {jobs} jobs x1", lambda: microbatch(engine, setup, jobs))
    engine = None  # drop the engine before the probe takes the GPU
    _free_device_memory()
    run_restart_probe(setup, report, out)
    print_table(report.data)
    return report


def _guarded(report: Report, section: str, name: str, measure) -> None:
    """Measure one case; a failure is recorded in the report and the run goes on."""
    try:
        result = measure()
    except Exception as exc:  # noqa: BLE001 - one failed case must not lose the others
        report.add(section, name, {"error": f"{type(exc).__name__}: {exc}"[:2000]})
        print(f"{section} {name} FAILED: {exc!r}", flush=True)
        return
    report.add(section, name, result)
    if "s_per_call" in result:
        _print_case(section, name, result)


def _free_device_memory() -> None:
    """Let the probe process have the GPU: drop compiled graphs and their CUDA-graph pools."""
    import gc

    import torch

    torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _print_case(section: str, name: str, r: dict) -> None:
    print(f"{section:<6} {name:<22} {r['s_per_call']:.3f} s/call {r['s_per_image']:.3f} s/img "
          f"x{r['x_floor']:.1f} floor", flush=True)


def print_table(data: dict) -> None:
    """The README table, from the report (also run on a saved JSON: bench.pipeline --table)."""
    from bench.fast_engine_table import markdown_table

    print("\n" + markdown_table(data), flush=True)
