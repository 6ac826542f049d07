"""The compiled engine, proven on the CPU with inductor (real code generation) and the tiny models:
warming up compiles each network once per size with no graph break, each network in its own
dynamo cache; jobs after it, in both modes, any batch up to the buckets' rows, with and without a
face region and micro-batched, compile nothing new; the images equal the eager engine's within
float tolerance; a size outside the buckets runs eager and the log says so; a second process with
the warm cache generates no new code (inductor's FX graph cache hits, no misses).

One engine compiled once for the module at the smallest shape, 64x64 (8x8 latents), passes of up
to eight images: every row bucket (2, 4, 8) in the warm-up, and after it quality passes of 10 and
16 rows, which run as 8-row calls (a 16-row bucket used to compile a second graph: the CPU
convolution's backend choice changes at 16). Inductor's C++ builds take minutes on a loaded CPU:
integration tests."""

from __future__ import annotations

import inspect
import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch._dynamo.eval_frame import _debug_get_cache_entry_list
from torch._dynamo.utils import counters

from shared.settings import Settings
from tests.pipeline_inputs import PORTRAIT_KPS, face_embedding, pixels
from worker.engine.devices import DevicePolicy
from worker.engine.face_geometry import region_mask
from worker.engine.fast_mode import FastOptions, warm_up
from worker.engine.generation import BatchJob, GenerationInputs, generate_batch, generate_images
from worker.engine.loading import load_engine
from worker.face.keypoints import draw_kps

pytestmark = pytest.mark.integration

SIZE = 64
OPTIONS = {"compile_mode": "default", "max_images": 8, "compile_sizes": ((SIZE, SIZE),)}


def _inputs(size: int = SIZE, **overrides) -> GenerationInputs:
    kps = PORTRAIT_KPS * size / 128
    base = dict(prompt="full body photo of a woman, standing", negative_prompt="blurry", seed=7,
                face_embedding=face_embedding(), kps_image=draw_kps(size, size, kps), num_images=2,
                width=size, height=size, mode="fast", steps=2, guidance=0.0)
    return GenerationInputs(**{**base, **overrides})


QUALITY = {"mode": "quality", "steps": 2, "guidance": 5.0}


def _close(a, b) -> bool:
    """Equal up to float rounding (inductor fuses and reorders; the tiny random model amplifies
    rounding to a few levels on a few pixels, as a batch row vs the same image alone does)."""
    diff = np.abs(pixels(a) - pixels(b))
    return float(diff.mean()) < 0.75 and int(diff.max()) <= 12


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("compile-cache")


def _cache_entries(pipe) -> dict[str, int]:
    """Graphs dynamo holds per code object: each network's own ``forward``, and diffusers'
    ``apply_lora_scale`` wrapper that the UNet's and the ControlNet's forwards share."""
    codes = {"controlnet": inspect.unwrap(type(pipe.controlnet).forward).__code__,
             "unet": inspect.unwrap(type(pipe.unet).forward).__code__,
             "vae.decoder": type(pipe.vae.decoder).forward.__code__,
             "lora-scale wrapper": type(pipe.unet).forward.__code__}
    return {name: len(_debug_get_cache_entry_list(code)) for name, code in codes.items()}


@pytest.fixture(scope="module")
def compiled(tiny_model_dir: Path, cache_dir: Path):
    """The tiny engine compiled and warmed up once; the warm-up's graph breaks and new dynamo
    cache entries beside it (deltas: other tests in the process may have compiled too)."""
    breaks = sum(counters["graph_break"].values())
    policy = DevicePolicy.decide(Settings(_env_file=None, device="cpu"))
    engine = load_engine(tiny_model_dir, policy, fast=FastOptions(cache_dir=cache_dir, **OPTIONS))
    entries = _cache_entries(engine.pipe)
    warm_up(engine)
    engine.warm_up_breaks = sum(counters["graph_break"].values()) - breaks
    engine.warm_up_entries = {k: n - entries[k] for k, n in _cache_entries(engine.pipe).items()}
    return engine


def test_warm_up_compiles_each_network_once_per_size_without_a_break(compiled):
    state = compiled.fast.compile
    assert compiled.fast.compiled == ["controlnet", "unet", "vae.decoder"]
    latent = (SIZE // 8, SIZE // 8)
    assert dict(state.graphs) == {("controlnet", latent): 1, ("unet", latent): 1, ("vae.decoder", latent): 1}
    assert compiled.warm_up_breaks == 0
    assert state.recompiles() == 0 and state.eager_shapes == set()
    assert compiled.fast.compile.buckets.rows == (2, 4, 8)
    # one cache per network: the shared wrapper would hold two networks' graphs under one limit
    assert compiled.warm_up_entries == {"controlnet": 1, "unet": 1, "vae.decoder": 1, "lora-scale wrapper": 0}


def test_jobs_after_warm_up_compile_nothing_in_either_mode(compiled):
    state = compiled.fast.compile
    before = dict(state.graphs)
    region = region_mask((SIZE, SIZE), (20, 8, 44, 32))
    other = region_mask((SIZE, SIZE), (10, 4, 30, 30))
    with torch.compiler.set_stance("fail_on_recompile"):
        generate_images(compiled, _inputs(num_images=1, steps=1))
        generate_images(compiled, _inputs(num_images=2, steps=1, face_region=region, guidance=1.5))
        generate_images(compiled, _inputs(num_images=2, face_region=region, **{**QUALITY, "steps": 1}))
        generate_images(compiled, _inputs(num_images=3, steps=1))                    # 3 rows, padded to 4
        generate_images(compiled, _inputs(num_images=5, **{**QUALITY, "steps": 1}))  # 10 rows: 8 + 2; VAE 5 -> 8
        generate_images(compiled, _inputs(num_images=8, **{**QUALITY, "steps": 1}))  # 16 rows: 8 + 8
        results = generate_batch(compiled, [BatchJob(_inputs(num_images=1, steps=1, seed=1, face_region=region)),
                                            BatchJob(_inputs(num_images=1, steps=1, seed=2, face_region=other))])
    assert [r.error for r in results] == [None, None]
    assert dict(state.graphs) == before and state.recompiles() == 0


def test_compiled_images_equal_the_eager_engines(compiled, fast_tiny_engine):
    # quality x5: 10 rows, run as calls of 8 and 2 rows whose outputs are joined back in order
    for case in ({"num_images": 1}, {"num_images": 2}, {"num_images": 1, **QUALITY}, {"num_images": 5, **QUALITY}):
        eager = generate_images(fast_tiny_engine, _inputs(**case)).images
        fast = generate_images(compiled, _inputs(**case)).images
        assert len(fast) == len(eager) == case["num_images"]
        assert all(_close(a, b) for a, b in zip(eager, fast)), case


def test_a_size_outside_the_buckets_runs_eager_and_says_so(compiled, caplog):
    state = compiled.fast.compile
    before = dict(state.graphs)
    with caplog.at_level(logging.INFO, logger="worker.engine.compiled_modules"):
        images = generate_images(compiled, _inputs(size=72, num_images=1, steps=1)).images
    assert images[0].size == (72, 72)
    assert dict(state.graphs) == before
    assert ("unet", (9, 9)) in state.eager_shapes
    assert "not a compiled shape" in caplog.text and "9x9" in caplog.text


SECOND_PROCESS = """
    import json, sys
    from pathlib import Path
    import torch
    from torch._dynamo.utils import counters
    from shared.settings import Settings
    from worker.engine.devices import DevicePolicy
    from worker.engine.fast_mode import FastOptions, warm_up
    from worker.engine.loading import load_engine

    model_dir, cache_dir, options = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
    options["compile_sizes"] = tuple(map(tuple, options["compile_sizes"]))
    torch.set_num_threads(int(sys.argv[4]))
    policy = DevicePolicy.decide(Settings(_env_file=None, device="cpu"))
    engine = load_engine(model_dir, policy, fast=FastOptions(cache_dir=cache_dir, **options))
    warm_up(engine)
    print(json.dumps({"inductor": dict(counters["inductor"]), "graphs": sum(engine.fast.compile.graphs.values()),
                      "recompiles": engine.fast.compile.recompiles()}))
"""


def test_a_second_process_with_the_warm_cache_generates_no_code(compiled, tiny_model_dir, cache_dir):
    # as a restarted worker does, the second process runs torch on as many threads as the first:
    # inductor generates its CPU kernels for that count, which is part of the cache's key
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(SECOND_PROCESS), str(tiny_model_dir),
                           str(cache_dir), json.dumps(OPTIONS), str(torch.get_num_threads())],
                          capture_output=True, text=True, check=False,
                          cwd=Path(__file__).resolve().parents[3])
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["graphs"] == 3 and seen["recompiles"] == 0
    assert seen["inductor"].get("fxgraph_cache_miss", 0) == 0
    assert seen["inductor"].get("fxgraph_cache_hit", 0) >= 3


def test_a_base_switch_keeps_the_compiled_graphs(compiled, fast_tiny_engine):
    """The switch copies the other base into the parameters in place (worker.engine.base_switch):
    the compiled graphs read them at their addresses, so nothing recompiles and the compiled
    images follow the new weights as the eager engine's do."""
    from worker.tiny.model_dir import SECOND_BASE

    state = compiled.fast.compile
    before = dict(state.graphs)
    try:
        with torch.compiler.set_stance("fail_on_recompile"):
            fast = generate_images(compiled, _inputs(num_images=1, base=SECOND_BASE)).images
            back = generate_images(compiled, _inputs(num_images=1)).images
        eager = generate_images(fast_tiny_engine, _inputs(num_images=1, base=SECOND_BASE)).images
        default = generate_images(fast_tiny_engine, _inputs(num_images=1)).images
    finally:
        compiled.bases.use(None)
        fast_tiny_engine.bases.use(None)
    assert dict(state.graphs) == before and state.recompiles() == 0
    assert _close(fast[0], eager[0]) and _close(back[0], default[0])
    assert not _close(fast[0], back[0])   # the switch reached the compiled graphs
