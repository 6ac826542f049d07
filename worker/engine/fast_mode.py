"""The fast engine: the same pipeline and stages, arranged for the GPU's sake. On by default with
CUDA (``IDBODY_ENGINE_FAST=auto``), off on the CPU, where the plain path is what runs and what
every benchmark compares against. Compiling (step 5) is a separate switch,
``IDBODY_ENGINE_COMPILE``, off by default until its compile time is brought down (see
bench/README.md).

What ``make_fast`` does to a loaded engine, in order:

1. the LCM-LoRA baked into the UNet weights with no PEFT wrapper left (worker.engine.baked_lora),
   the mode switch restoring the exact base weights for quality mode;
2. fused QKV projections (diffusers' ``Attention.fuse_projections`` + ``FusedAttnProcessor2_0``)
   on every attention whose processor is the plain one. diffusers' model-wide
   ``fuse_qkv_projections`` would also replace the IP-Adapter processors (and so drop the face),
   so it is applied per module; q/k/v keep their names as views into the fused weight, so the
   baked LoRA still updates them in place;
3. per-row IP-Adapter and IdentityNet scales (worker.engine.row_scales), which micro-batching
   needs and which keep scale values out of compiled graphs;
4. on CUDA when ``engine_compile`` is set: channels-last memory for UNet, IdentityNet and VAE,
   then torch.compile with CUDA graphs (worker.engine.compiled_modules), caches on disk: whole
   networks, no graph break, static sizes (worker.engine.shape_buckets), other sizes eager.
   Channels-last only together with the compiler, which generates NHWC kernels for group norm:
   in eager PyTorch it made the H100's VAE decode 1.7x slower (bench/README.md)

Example::

    options = FastOptions.decide(settings, policy, model_dir)    # None on the CPU by default
    if options:
        make_fast(engine, options)
        warm_up(engine)          # compiled: every size and row bucket, both modes
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from worker.engine.shape_buckets import ShapeBuckets

if TYPE_CHECKING:
    from worker.engine.compiled_modules import CompiledPipeline

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FastOptions:
    channels_last: bool = True               # applied with compiling only (step 4)
    fuse_qkv: bool = True
    compile_mode: str | None = None          # None: not compiled | "reduce-overhead" (CUDA graphs) | "default"
    compile_backend: str = "inductor"        # "aot_eager" traces without generating kernels
    cache_dir: Path | None = None
    max_images: int = 8                      # the most images of one pass (row buckets hold twice that)
    compile_sizes: tuple[tuple[int, int], ...] | None = None   # None: the offered sizes (ShapeBuckets)

    @classmethod
    def decide(cls, settings, policy, model_dir: Path) -> FastOptions | None:
        """auto: fast with CUDA; compile when asked (``engine_compile``), only with CUDA and the
        whole pipeline resident (model offload moves weights between calls, which CUDA graphs
        cannot follow)."""
        wanted = settings.engine_fast
        if wanted == "off" or (wanted == "auto" and policy.device != "cuda"):
            return None
        compiles = settings.engine_compile and policy.device == "cuda" and not policy.cpu_offload
        cache = settings.compile_cache_dir or Path(model_dir) / ".compile-cache"
        return cls(compile_mode="reduce-overhead" if compiles else None, cache_dir=cache,
                   max_images=settings.max_batch_images)


@dataclass
class FastEngine:
    options: FastOptions
    row_scales: object | None        # worker.engine.row_scales.RowScales (InstantID engines)
    compiled: list[str]
    prepare_s: float
    compile: CompiledPipeline | None = None    # the compiled networks' buckets and counts


def make_fast(engine, options: FastOptions) -> FastEngine:
    """Rearrange a loaded engine for speed, in place; returns (and sets) ``engine.fast``."""
    from worker.engine.baked_lora import BakedLora
    from worker.engine.lcm_mode import LCM_ADAPTER
    from worker.engine.row_scales import RowScales

    started = time.perf_counter()
    pipe = engine.pipe
    engine.modes.use("quality")  # LoRA off: the weights are the base weights while baking
    networks = [m for m in (pipe.unet, getattr(pipe, "controlnet", None), getattr(pipe, "pose_controlnet", None),
                            pipe.vae) if m is not None]
    if engine.modes.lcm_loaded:
        engine.modes.baked = BakedLora.bake(pipe.unet, LCM_ADAPTER)
    if options.fuse_qkv:
        fused = sum(fuse_plain_attention_qkv(m) for m in networks)
        log.info("fused QKV projections in %d attention modules", fused)
    scales = RowScales.install(pipe) if engine.method == "instantid" else None
    engine.modes.use("fast")
    engine.fast = FastEngine(options=options, row_scales=scales, compiled=[],
                             prepare_s=time.perf_counter() - started)
    if options.compile_mode is not None:
        compile_engine(engine, options)
    return engine.fast


def compile_engine(engine, options: FastOptions) -> list[str]:
    """Step 4 alone (the bench measures the fast engine without it first): channels-last and
    torch.compile of the networks; compiling itself happens at the first call of each shape
    (``warm_up``)."""
    import torch

    from worker.engine.compiled_modules import compile_pipeline, use_compile_cache

    pipe = engine.pipe
    if options.channels_last:
        for module in (pipe.unet, getattr(pipe, "controlnet", None), getattr(pipe, "pose_controlnet", None), pipe.vae):
            if module is not None:
                module.to(memory_format=torch.channels_last)

    if options.cache_dir is not None:
        use_compile_cache(options.cache_dir)
    engine.fast.options = options   # warm_up reads max_images from here
    engine.fast.compile = compile_pipeline(pipe, shape_buckets(engine, options), options.compile_mode,
                                           options.compile_backend)
    engine.fast.compiled = engine.fast.compile.networks
    return engine.fast.compiled


def shape_buckets(engine, options: FastOptions) -> ShapeBuckets:
    """The sizes and row counts the engine compiles for (worker.engine.shape_buckets)."""
    from worker.engine.output_size import default_size, working_size

    return ShapeBuckets.for_engine(working_size(engine.pipe), default_size(engine.pipe), options.max_images,
                                   sizes=options.compile_sizes)


def fuse_plain_attention_qkv(model) -> int:
    """Fuse q/k/v (self-attention) or k/v (cross-attention) of every attention module whose
    processor is diffusers' plain one; leaves IP-Adapter processors alone. Returns the count."""
    from diffusers.models.attention_processor import (
        Attention,
        AttnProcessor2_0,
        FusedAttnProcessor2_0,
    )

    count = 0
    for name, module in model.named_modules():
        if not isinstance(module, Attention) or type(module.processor) is not AttnProcessor2_0:
            continue
        if "encoder_hid_proj" in name:
            continue  # the IP-Adapter's Resampler: built as self-attention, called with other keys
        module.fuse_projections()
        # fuse_projections decides by is_cross_attention (the configured kind, not the call):
        # it builds to_qkv or to_kv, never both
        if hasattr(module, "to_qkv"):
            _share_storage(module.to_qkv, [module.to_q, module.to_k, module.to_v])
        else:
            _share_storage(module.to_kv, [module.to_k, module.to_v])
        module.set_processor(FusedAttnProcessor2_0())
        count += 1
    return count


def _share_storage(fused, parts) -> None:
    """Make each part's weight (and bias) a view into the fused layer's: one copy in memory, and
    in-place updates of a part (the baked LoRA's switch) reach the fused layer."""
    offset = 0
    for part in parts:
        rows = part.weight.shape[0]
        part.weight.data = fused.weight.data[offset:offset + rows]
        if part.bias is not None:
            part.bias.data = fused.bias.data[offset:offset + rows]
        offset += rows


def warm_up(engine, width: int | None = None, height: int | None = None, rows: tuple[int, ...] | None = None,
            quality_rows: tuple[int, ...] | None = None) -> dict[str, float]:
    """Run each (size, mode, batch) shape once, one step, so compiling and CUDA-graph recording
    happen before the worker says it is ready. Without a size: every size the engine compiled for;
    without rows: every row bucket in each mode (quality's guidance doubles the rows, so it runs
    half as many images). A compile that fails leaves the engine eager, logged, not broken.
    Returns seconds per shape ("fast 256x256 x2", ...)."""
    from worker.engine.output_size import default_size

    compiled = engine.fast.compile
    if width is None or height is None:
        sizes = list(compiled.buckets.sizes) if compiled is not None else [default_size(engine.pipe)]
    else:
        sizes = [(width, height)]
    if compiled is not None:
        bucket_rows = compiled.buckets.rows
        rows = rows or tuple(r for r in bucket_rows if r <= engine.fast.options.max_images)
        quality_rows = quality_rows or tuple(r // 2 for r in bucket_rows)
    shapes = [(size, "fast", n, 0.0) for size in sizes for n in rows or (2,)]
    shapes += [(size, "quality", n, 5.0) for size in sizes for n in quality_rows or (1,)]
    seconds = {}
    for (w, h), mode, n, guidance in shapes:
        t = time.perf_counter()
        try:
            _one_pass(engine, w, h, mode, n, guidance)
        except Exception as exc:  # a compile error must not take the worker down
            if engine.fast.compile is None:
                raise
            _back_to_eager(engine, exc)
            _one_pass(engine, w, h, mode, n, guidance)
        seconds[f"{mode} {w}x{h} x{n}"] = time.perf_counter() - t
    log.info("fast engine warmed up: %s", {k: round(v, 2) for k, v in seconds.items()})
    return seconds


def _one_pass(engine, width: int, height: int, mode: str, images: int, guidance: float) -> None:
    import numpy as np

    from worker.engine.generation import BatchJob, GenerationInputs, generate_batch
    from worker.face.keypoints import draw_kps

    face = np.random.default_rng(0).standard_normal(512).astype(np.float32)
    kps = np.array([[0.4, 0.2], [0.6, 0.2], [0.5, 0.27], [0.42, 0.33], [0.58, 0.33]], dtype=np.float32)
    kps_image = draw_kps(width, height, kps * np.array([width, height], dtype=np.float32))
    job = GenerationInputs(prompt="a person standing", negative_prompt="", seed=0, face_embedding=face,
                           kps_image=kps_image, num_images=images, width=width, height=height, mode=mode,
                           steps=1, guidance=guidance)
    (result,) = generate_batch(engine, [BatchJob(job)])
    if result.error is not None:
        raise result.error


def _back_to_eager(engine, exc: BaseException) -> None:
    from worker.engine.compiled_modules import uncompile_pipeline

    log.error("compiling the engine failed (%s: %s); it runs eager", type(exc).__name__, str(exc)[:2000])
    uncompile_pipeline(engine.pipe)
    engine.fast.compile, engine.fast.compiled = None, []
