"""The compile phase of ``python -m bench.pipeline --full-size``: compile the fast engine for the
bench's size (fullgraph, static sizes, the batch the one dynamic dimension: worker.engine.
compiled_modules), warm it up from an empty compile cache, then start a second process with the
warm cache and time its way to ready (the restart).

The report's top-level ``compile`` object: ``backend``, ``graph_breaks``, ``recompiles``,
``first_s`` (compile + warm-up in the first process, cache empty) and ``restart_s`` (prepare +
warm-up in the second), with the compile caches' hits and misses of each. ``--smoke`` does the
same on the CPU with inductor (real code generation) and the tiny models; on CUDA the engine
compiles with CUDA graphs ("reduce-overhead").

Example::

    if compile_and_warm(engine, setup, report):
        ...                                   # the compiled cases
    run_restart_probe(setup, report, out)     # fills report.data["compile"]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.fast_engine import Report, Setup, build_engine

# the bench's sizes are its only compile bucket; passes run up to 8 images (the x8 case)
MAX_IMAGES = 8


def fast_options(setup: Setup, compiled: bool = True):
    from worker.engine.fast_mode import FastOptions

    if not compiled:
        return FastOptions(cache_dir=setup.cache_dir)
    return FastOptions(compile_mode="default" if setup.smoke else "reduce-overhead", cache_dir=setup.cache_dir,
                       max_images=MAX_IMAGES, compile_sizes=((setup.width, setup.height),))


def warm_up_fast(engine) -> dict[str, float]:
    """The worker's own warm-up: every row bucket of the bench's size, both modes."""
    from worker.engine.fast_mode import warm_up

    return warm_up(engine)


def compile_counts(engine) -> dict[str, Any]:
    """Graphs, graph breaks, recompiles, eager shapes and compile-cache traffic in this process."""
    from torch._dynamo.utils import counters

    from worker.engine.compiled_modules import graph_breaks

    compiled = engine.fast.compile
    caches = {f"{section}_{name}": int(n) for section in ("inductor", "aot_autograd")
              for name, n in counters[section].items() if "cache" in name}
    return {"graphs": sum(compiled.graphs.values()) if compiled else 0, "graph_breaks": graph_breaks(),
            "recompiles": compiled.recompiles() if compiled else None,
            "eager_shapes": sorted(map(str, compiled.eager_shapes)) if compiled else [], "caches": caches}


def compile_and_warm(engine, setup: Setup, report: Report) -> bool:
    """Compile the fast engine from an empty cache and warm it up; False (and the error in the
    report) when compiling failed and the engine went back to eager."""
    from worker.engine.fast_mode import compile_engine

    shutil.rmtree(setup.cache_dir, ignore_errors=True)   # the first compile is a cold one
    t = time.perf_counter()
    report.add("fast_engine", "compiled", compile_engine(engine, fast_options(setup)))
    report.add("fast_engine", "warmup_s_per_shape", warm_up_fast(engine))
    first_s = time.perf_counter() - t
    report.add("fast_engine", "compile_and_warmup_s", first_s)
    counts = compile_counts(engine)
    report.add("fast_engine", "graph_breaks", counts["graph_breaks"])
    options = fast_options(setup)
    report.data["compile"] = {"backend": options.compile_backend, "mode": options.compile_mode,
                              "sizes": [[setup.width, setup.height]], "first_s": first_s, **counts}
    if engine.fast.compile is None:
        report.data["compile"]["error"] = "compiling failed; the engine went back to eager (see the log)"
    report.write()
    return engine.fast.compile is not None


def restart_probe(setup: Setup) -> dict[str, Any]:
    """A fresh process's start with the compile cache present: build, prepare, warm up."""
    from worker.engine.fast_mode import make_fast

    t0 = time.perf_counter()
    engine = build_engine(setup)
    built = time.perf_counter()
    make_fast(engine, fast_options(setup))
    prepared = time.perf_counter()
    seconds = warm_up_fast(engine)
    ready = time.perf_counter()
    return {"build_random_models_s": built - t0, "prepare_s": prepared - built, "warmup_s": ready - prepared,
            "warmup_s_per_shape": seconds, "restart_to_ready_s": ready - built, **compile_counts(engine),
            "note": "restart_to_ready_s excludes building the random models (a real worker loads weights instead)"}


def run_restart_probe(setup: Setup, report: Report, out: Path) -> None:
    budget = int(setup.left_s() - 5)
    if budget < 30:
        report.add("warm_restart", "skipped", f"only {budget} s of the run's budget left")
        return
    probe_out = out.with_name(out.stem + "_restart.json")
    command = [sys.executable, "-m", "bench.pipeline", "--restart-probe", "--cache-dir", str(setup.cache_dir),
               "--out", str(probe_out)] + (["--smoke"] if setup.smoke else [])
    t = time.perf_counter()
    try:
        done = subprocess.run(command, timeout=budget, capture_output=True, text=True, env=dict(os.environ), check=False)
        result = json.loads(probe_out.read_text()) if probe_out.is_file() else {}
        result.update(process_s=time.perf_counter() - t, rc=done.returncode)
        if done.returncode:
            result["stderr_tail"] = done.stderr[-3000:]
    except subprocess.TimeoutExpired:
        result = {"timed_out_after_s": budget}
    report.data["warm_restart"] = result
    _restart_into_compile(report.data, result)
    report.write()


def _restart_into_compile(data: dict, restart: dict) -> None:
    """The restart's figures beside the first compile's, in the top-level ``compile`` object."""
    summary = data.setdefault("compile", {})
    restart_s = restart.get("restart_to_ready_s")
    summary["restart_s"] = restart_s
    if restart_s and summary.get("first_s"):
        summary["restart_speedup"] = summary["first_s"] / restart_s
    for key in ("graphs", "graph_breaks", "recompiles", "caches"):
        if key in restart:
            summary[f"restart_{key}"] = restart[key]
