"""The markdown table bench/README.md shows, built from a fast-engine bench report.

Example::

    print(markdown_table(json.loads(Path("bench/results/pipeline_full_size.json").read_text())))
"""

from __future__ import annotations

from typing import Any


def _f(value: Any, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _case_rows(data: dict) -> list[str]:
    eager, fast = data.get("eager", {}), data.get("fast", {})
    rows = ["| case | eager s/call | eager s/image | fast s/call | fast s/image | speed-up | fast × floor "
            "| eager × floor | peak VRAM eager / fast (GiB) |", "|---|---|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys([*eager, *fast]):
        e, f = eager.get(name, {}), fast.get(name, {})
        speed = e["s_per_call"] / f["s_per_call"] if e and f else None
        vram = "/".join(_f(x.get("peak_vram_mib") and x["peak_vram_mib"] / 1024, 1) for x in (e, f))
        rows.append(f"| {name} | {_f(e.get('s_per_call'))} | {_f(e.get('s_per_image'))} | {_f(f.get('s_per_call'))} "
                    f"| {_f(f.get('s_per_image'))} | {_f(speed, 2)} | {_f(f.get('x_floor'), 2)} "
                    f"| {_f(e.get('x_floor'), 2)} | {vram} |")
    return rows


def _other_rows(data: dict) -> list[str]:
    lines = []
    for name, m in data.get("microbatch", {}).items():
        lines.append(f"- micro-batching, {name}: one by one {_f(m['one_by_one_s'])} s, batched {_f(m['batched_s'])} s "
                     f"({_f(m['speedup'], 2)}× sooner); failed jobs: {len(m['failed_jobs'])}")
    fe = data.get("fast_engine", {})
    if fe:
        shapes = ", ".join(f"{k} {_f(v, 1)} s" for k, v in fe.get("warmup_s_per_shape", {}).items())
        lines.append(f"- fast engine: prepare {_f(fe.get('prepare_s'), 1)} s; compile + CUDA-graph warm-up "
                     f"{_f(fe.get('compile_and_warmup_s'), 1)} s ({shapes}); graph breaks {fe.get('graph_breaks')}")
        if "compile_error" in fe:
            lines.append(f"- compile error: {fe['compile_error'][:300]}")
    restart = data.get("warm_restart")
    if restart:
        if "restart_to_ready_s" in restart:
            lines.append(f"- warm restart (second process, compile cache present): prepare + warm-up to ready "
                         f"{_f(restart['restart_to_ready_s'], 1)} s (warm-up {_f(restart['warmup_s'], 1)} s)")
        else:
            lines.append(f"- warm restart: {dict((k, v) for k, v in restart.items() if k != 'stderr_tail')}")
    floor = data.get("floor", {})
    if floor:
        lines.append(f"- measured fp16 matmul peak {_f(floor.get('matmul_peak_tflops'), 0)} TFLOP/s (the floor's rate)")
    return lines


def markdown_table(data: dict) -> str:
    head = f"{data.get('gpu')}, torch {data.get('torch')}, diffusers {data.get('diffusers')}, " \
           f"{data.get('size')}, median of {data.get('repeats')}"
    return "\n".join([head, "", *_case_rows(data), "", *_other_rows(data)])
