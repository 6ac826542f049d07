"""torch.compile of the three networks a generation spends its GPU time in: the UNet, IdentityNet
(the ControlNet) and the VAE decoder, with CUDA graphs ("reduce-overhead") so a denoise step is a
few graph replays instead of thousands of kernel launches.

Choices:

- the modules' ``forward`` is compiled, not their ``__call__``: hooks stay outside the graph, so
  the per-call IdentityNet hook (face tokens) and the row-scale hook never cause a recompile;
- ``dynamic=True``: one compile serves every batch size (and output size); CUDA graphs still
  record one graph per concrete shape, which costs a replay, not a compile. A batch of one is
  special-cased by the compiler (size-1 dims specialise), so ``MIN_ROWS`` pads a pass to two
  rows rather than paying a second compile;
- a new CUDA-graph "step" begins before IdentityNet (the first graph of each denoise step) and
  before the VAE decode, so the previous step's graph outputs may be overwritten (they have
  been consumed by then);
- the compiler's caches (FX graph, AOT autograd, Triton kernels) go to a folder next to the
  models, so a restarted worker loads compiled kernels instead of generating them again.

Example::

    use_compile_cache(Path("models/.compile-cache"))
    compile_pipeline(pipe, mode="reduce-overhead")
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import torch

log = logging.getLogger(__name__)

MIN_ROWS = 2


def use_compile_cache(folder: Path) -> None:
    """Point inductor's on-disk caches at ``folder`` (call before the first compile)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # torch reads its cache location from this variable whenever it needs it; there is no
    # other switch for it.
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder.resolve())
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = True
    functorch_config.enable_autograd_cache = True
    log.info("compile cache: %s", folder)


def _new_graph_step(compiled):
    @functools.wraps(compiled)
    def run(*args, **kwargs):
        torch.compiler.cudagraph_mark_step_begin()
        return compiled(*args, **kwargs)

    return run


def _float_timestep(_module, args, kwargs):
    """LCM hands the networks int64 timesteps, Euler float32 ones: one dtype keeps one compiled
    graph for both modes (the time embedding computes in float32 either way)."""
    if len(args) > 1 and torch.is_tensor(args[1]):
        args = (args[0], args[1].float(), *args[2:])
    elif torch.is_tensor(kwargs.get("timestep")):
        kwargs["timestep"] = kwargs["timestep"].float()
    return args, kwargs


def compile_pipeline(pipe, mode: str | None = "reduce-overhead", backend: str = "inductor") -> list[str]:
    """Compile UNet, ControlNet (when the pipeline has one) and VAE decoder in place; returns
    their names. Compilation itself happens lazily, at the first call of each (the warm-up)."""
    options = {"dynamic": True, "fullgraph": False, "backend": backend}
    if backend == "inductor":
        options["mode"] = mode
    compiled = []
    controlnet = getattr(pipe, "controlnet", None)
    for network in (pipe.unet, controlnet):
        if network is not None:
            network.register_forward_pre_hook(_float_timestep, with_kwargs=True)
    unet = torch.compile(pipe.unet.forward, **options)
    # Without IdentityNet (the SDXL fallback) the UNet is the first graph of a step.
    pipe.unet.forward = unet if controlnet is not None else _new_graph_step(unet)
    compiled.append("unet")
    if controlnet is not None:
        controlnet.forward = _new_graph_step(torch.compile(controlnet.forward, **options))
        compiled.append("controlnet")
    pipe.vae.decoder.forward = _new_graph_step(torch.compile(pipe.vae.decoder.forward, **options))
    compiled.append("vae.decoder")
    log.info("torch.compile (%s, mode=%s, dynamic batch): %s", backend, mode, ", ".join(compiled))
    return compiled


def graph_breaks() -> int:
    """Graph breaks dynamo reported in this process so far (0 is what a clean compile gives)."""
    from torch._dynamo.utils import counters

    return int(sum(counters["graph_break"].values()))


def uncompile_pipeline(pipe) -> None:
    """Back to the eager forwards (the compiled ones were instance attributes over the class's)."""
    for module in (pipe.unet, getattr(pipe, "controlnet", None), pipe.vae.decoder):
        if module is not None:
            module.__dict__.pop("forward", None)
