"""What switching the resident base checkpoint costs (worker.engine.base_switch): seconds for each
switch, both ways, on the plain engine (PEFT LoRA: unfuse, copy, fuse) and on the fast engine
(baked LoRA: restore, copy, retake the base copy, fuse), beside what reloading the whole engine
would cost instead.

    python -m bench.base_switch                  # tiny profile on this CPU: bench/results/base_switch_tiny_cpu.json
    python -m bench.base_switch --full-size      # SDXL-size random bases on a CUDA GPU (writes ~14 GB of
                                                 # fp16 weights under --scratch first): base_switch_full_size.json
    python -m bench.base_switch --full-size --smoke   # the same code path on the CPU with tiny shapes

The tiny numbers say the switch's fixed costs (one tensor at a time, the LoRA round trip); the
SDXL-size number, reading and copying ~6.8 GB of UNet and text encoders, is the one that matters.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench.report_file import write_report

SWITCHES = 5


def time_switches(engine, names: tuple[str, str], rounds: int) -> dict:
    """Seconds of each switch first -> second and back, ``rounds`` times each way."""
    there, back = [], []
    for _ in range(rounds):
        engine.bases.use(names[1])
        there.append(engine.bases.last_switch_s)
        engine.bases.use(names[0])
        back.append(engine.bases.last_switch_s)
    return {"to_second_s": statistics.median(there), "to_first_s": statistics.median(back),
            "max_s": max(there + back), "rounds": rounds}


def bench_tiny(rounds: int) -> dict:
    import torch

    from shared.settings import Settings
    from worker.engine.devices import DevicePolicy
    from worker.engine.fast_mode import FastOptions
    from worker.engine.loading import load_engine
    from worker.tiny.model_dir import SECOND_BASE, build_tiny_model_dir

    settings = Settings(_env_file=None, model_profile="tiny", device="cpu")
    model_dir = build_tiny_model_dir(Path(settings.tiny_model_dir))
    policy = DevicePolicy.decide(settings)
    rows = {}
    for label, fast in (("plain", None), ("fast", FastOptions())):
        started = time.perf_counter()
        engine = load_engine(model_dir, policy, fast=fast)
        load_s = time.perf_counter() - started
        rows[label] = {"engine_load_s": load_s, **time_switches(engine, ("tiny", SECOND_BASE), rounds)}
    return {"profile": "tiny", "device": "cpu", "torch_threads": torch.get_num_threads(),
            "load_average": os.getloadavg()[0], "engines": rows}


def _random_base(engine, folder: Path, seed: int) -> None:
    """A base of the engine's own UNet and text-encoder shapes with other random weights (fp16),
    saved as a base checkpoint folder."""
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    pipe = engine.pipe
    UNet2DConditionModel.from_config(pipe.unet.config).to(torch.float16).save_pretrained(
        folder / "unet", safe_serialization=True)
    for name in ("text_encoder", "text_encoder_2"):
        model = getattr(pipe, name)
        type(model)(model.config).to(torch.float16).save_pretrained(folder / name, safe_serialization=True)


def bench_full_size(rounds: int, scratch: Path, smoke: bool) -> dict:
    import torch

    from bench.fast_engine import Setup, build_engine
    from worker.engine.base_switch import BaseSwitch
    from worker.engine.fast_mode import FastOptions, make_fast
    from worker.models.bases import BaseCheckpoint

    setup = Setup(smoke=smoke, device="cpu" if smoke else "cuda", width=0, height=0, repeats=1, cache_dir=scratch,
                  deadline=time.monotonic() + 3600)
    started = time.perf_counter()
    engine = build_engine(setup)
    build_s = time.perf_counter() - started
    policy = engine.policy
    folders = [scratch / "first", scratch / "second"]
    started = time.perf_counter()
    for seed, folder in enumerate(folders):
        _random_base(engine, folder, seed + 100)
    write_s = time.perf_counter() - started
    rows = {}
    for label in ("plain", "fast"):
        if label == "fast":
            make_fast(engine, FastOptions())
        engine.bases = BaseSwitch(engine.pipe, engine.modes, policy,
                                  [BaseCheckpoint("first", folders[0], True, ""), BaseCheckpoint("second", folders[1], False, "")])
        engine.bases.resident = None   # the random engine holds neither: the first switch loads "first"
        engine.bases.use("first")
        rows[label] = {"first_load_s": engine.bases.last_switch_s, **time_switches(engine, ("first", "second"), rounds),
                       "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if not smoke else None}
    device = "cpu (smoke: tiny shapes)" if smoke else torch.cuda.get_device_name()
    return {"profile": "full-size random fp16", "device": device, "write_bases_s": write_s,
            "engine_build_s": build_s, "engines": rows,
            "note": "the bases were just written: their files are in the page cache (a cold disk adds its read time)"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full-size", action="store_true", help="SDXL-size bases on a CUDA GPU.")
    parser.add_argument("--rounds", type=int, default=SWITCHES, help="Switches each way (median reported).")
    parser.add_argument("--scratch", type=Path, default=None, help="Where --full-size writes its two bases.")
    parser.add_argument("--smoke", action="store_true", help="With --full-size: tiny shapes on the CPU (checks the path).")
    args = parser.parse_args(argv)
    if args.full_size:
        with tempfile.TemporaryDirectory(dir=args.scratch, prefix="idbody-bases-") as scratch:
            report = bench_full_size(args.rounds, Path(scratch), args.smoke)
        name = "base_switch_full_size" + ("_smoke" if args.smoke else "")
    else:
        report = bench_tiny(args.rounds)
        name = "base_switch_tiny_cpu"
    for label, row in report["engines"].items():
        print(f"{label:<6} switch to second {row['to_second_s']:.3f} s, back {row['to_first_s']:.3f} s "
              f"(max {row['max_s']:.3f} s over {row['rounds']} each way)"
              + (f"; whole engine load {row['engine_load_s']:.2f} s" if "engine_load_s" in row else ""))
    write_report(name, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
