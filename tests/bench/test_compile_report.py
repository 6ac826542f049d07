"""The full-size bench's top-level ``compile`` object (bench.compile_phase): the first compile's
counts beside the restart's, and the restart's speed-up; the README's line is built from it. A
real ``--smoke`` run compiles with inductor for minutes on this CPU, so the shape is checked on a
report as the two processes leave it."""

from __future__ import annotations

from bench.compile_phase import _restart_into_compile
from bench.fast_engine_table import markdown_table


def _report() -> dict:
    return {"gpu": "cpu (smoke)", "compile": {"backend": "inductor", "mode": "default", "sizes": [[64, 64]],
                                              "first_s": 120.0, "graphs": 3, "graph_breaks": 0, "recompiles": 0,
                                              "caches": {"inductor_fxgraph_cache_miss": 3}}}


def test_the_restart_joins_the_first_compile_in_the_compile_object():
    data = _report()
    _restart_into_compile(data, {"restart_to_ready_s": 30.0, "graphs": 3, "graph_breaks": 0, "recompiles": 0,
                                 "caches": {"inductor_fxgraph_cache_hit": 3}})
    summary = data["compile"]
    assert {"backend", "graph_breaks", "recompiles", "first_s", "restart_s"} <= set(summary)
    assert summary["restart_s"] == 30.0 and summary["restart_speedup"] == 4.0
    assert summary["restart_caches"] == {"inductor_fxgraph_cache_hit": 3}
    assert "3 graphs, 0 graph breaks, 0 recompiles" in markdown_table(data)
    assert "(4.0× faster)" in markdown_table(data)


def test_a_restart_that_did_not_finish_leaves_no_speed_up():
    data = _report()
    _restart_into_compile(data, {"timed_out_after_s": 100})
    assert data["compile"]["restart_s"] is None and "restart_speedup" not in data["compile"]
