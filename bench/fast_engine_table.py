"""The markdown table bench/README.md shows, built from a fast-engine bench report.

Example::

    print(markdown_table(json.loads(Path("bench/results/pipeline_full_size.json").read_text())))
"""

from __future__ import annotations

from typing import Any


def _f(value: Any, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _speedup(base: dict, new: dict) -> float | None:
    return base["s_per_call"] / new["s_per_call"] if base and new else None


def _case_rows(data: dict) -> list[str]:
    sections = [{n: ({} if "error" in r else r) for n, r in data.get(k, {}).items()} for k in ("eager", "fast", "compiled")]
    eager, fast, compiled = sections
    rows = [("| case | eager s/call (s/image) | fast, not compiled: s/call (s/image) | speed-up | compiled: s/call "
             "(s/image) | speed-up | × floor eager / fast / compiled | peak VRAM eager / fast / compiled (GiB) |"),
            "|---|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys([*eager, *fast, *compiled]):
        e, f, c = eager.get(name, {}), fast.get(name, {}), compiled.get(name, {})
        cell = [f"{_f(x.get('s_per_call'))} ({_f(x.get('s_per_image'))})" if x else "—" for x in (e, f, c)]
        floors = " / ".join(_f(x.get("x_floor"), 2) for x in (e, f, c))
        vram = " / ".join(_f(x.get("peak_vram_mib") and x["peak_vram_mib"] / 1024, 1) for x in (e, f, c))
        rows.append(f"| {name} | {cell[0]} | {cell[1]} | {_f(_speedup(e, f), 2)} | {cell[2]} | {_f(_speedup(e, c), 2)} "
                    f"| {floors} | {vram} |")
    return rows


def _other_rows(data: dict) -> list[str]:
    lines = []
    for name, m in data.get("microbatch", {}).items():
        if "error" in m:
            lines.append(f"- micro-batching, {name}: failed: {m['error'][:300]}")
            continue
        lines.append(f"- micro-batching, {name}: one by one {_f(m['one_by_one_s'])} s, batched {_f(m['batched_s'])} s "
                     f"({_f(m['speedup'], 2)}× sooner); failed jobs: {len(m['failed_jobs'])}")
    fe = data.get("fast_engine", {})
    if fe:
        shapes = ", ".join(f"{k} {_f(v, 1)} s" for k, v in fe.get("warmup_s_per_shape", {}).items())
        lines.append(f"- fast engine: prepare {_f(fe.get('prepare_s'), 1)} s; compile + CUDA-graph warm-up "
                     f"{_f(fe.get('compile_and_warmup_s'), 1)} s ({shapes}); graph breaks {fe.get('graph_breaks')}")
        if "compile_error" in fe:
            lines.append(f"- compile error: {fe['compile_error'][:300]}")
    done = data.get("compile")
    if done:
        lines.append(f"- compile ({done.get('backend')}, mode {done.get('mode')}, sizes {done.get('sizes')}): "
                     f"{done.get('graphs')} graphs, {done.get('graph_breaks')} graph breaks, {done.get('recompiles')} "
                     f"recompiles; first compile + warm-up {_f(done.get('first_s'), 1)} s, restart with the warm cache "
                     f"{_f(done.get('restart_s'), 1)} s ({_f(done.get('restart_speedup'), 1)}× faster)")
    restart = data.get("warm_restart")
    if restart:
        if "restart_to_ready_s" in restart:
            lines.append(f"- warm restart (second process, compile cache present): prepare + warm-up to ready "
                         f"{_f(restart['restart_to_ready_s'], 1)} s (warm-up {_f(restart['warmup_s'], 1)} s)")
        else:
            lines.append(f"- warm restart: { {k: v for k, v in restart.items() if k != 'stderr_tail'} }")
    floor = data.get("floor", {})
    if floor:
        lines.append(f"- measured fp16 matmul peak {_f(floor.get('matmul_peak_tflops'), 0)} TFLOP/s (the floor's rate)")
    for section in ("eager", "fast", "compiled"):
        for name, r in data.get(section, {}).items():
            if "error" in r:
                lines.append(f"- {section} {name} failed: {r['error'][:300]}")
    return lines


def markdown_table(data: dict) -> str:
    head = f"{data.get('gpu')}, torch {data.get('torch')}, diffusers {data.get('diffusers')}, " \
           f"{data.get('size')}, median of {data.get('repeats')}"
    return "\n".join([head, "", *_case_rows(data), "", *_other_rows(data)])
