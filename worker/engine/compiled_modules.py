"""torch.compile of the three networks a generation spends its time in: the UNet, IdentityNet (the
ControlNet) and the VAE decoder; on CUDA with CUDA graphs ("reduce-overhead"), so a denoise step
is a few graph replays instead of thousands of kernel launches.

Clean by construction (bench/README.md has the story of the ``dynamic=True`` engine that never
finished compiling):

- ``fullgraph=True``: a graph break is an error at the first compile, not a silent slowdown;
- static shapes: each network's ``forward`` is replaced by a ``BucketedForward`` that lets the
  compiled graph see only the sizes of ``ShapeBuckets`` (worker.engine.shape_buckets), with the
  batch padded up to a bucket's row count (at most 8; a bigger pass runs as several calls) and
  marked as its one dynamic dimension (see ``_mark_batch``); any other size runs the eager
  forward (logged once per size). One graph per network and size, whatever the batch and mode;
- each network compiled from its own ``forward`` code (see ``_undecorated``), so dynamo's cache
  of one network holds that network's sizes only;
- the inputs that used to change between calls arrive in one form: LCM's int64 timesteps as
  float32 (Euler's dtype), and the IP-Adapter's face-region mask always present, one per row
  (all ones when a job has no face region: multiplying by one changes nothing);
- ``forward`` is compiled, not ``__call__``: hooks stay outside the graph, so the per-call
  IdentityNet hook (face tokens) and the row-scale hook never cause a recompile;
- a new CUDA-graph "step" begins before IdentityNet (the first graph of each denoise step) and
  before the VAE decode, so the previous step's graph outputs may be overwritten (they have been
  consumed by then);
- the compiler's caches (FX graph, AOT autograd, kernels) go to a folder next to the models, so a
  restarted worker loads compiled code instead of generating it again.

Example::

    use_compile_cache(Path("models/.compile-cache"))
    compiled = compile_pipeline(pipe, buckets, mode="reduce-overhead")
    compiled.recompiles()      # 0 after any number of jobs at the buckets' shapes
"""

from __future__ import annotations

import inspect
import logging
import os
import types
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

from worker.engine.shape_buckets import ShapeBuckets

log = logging.getLogger(__name__)


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


@dataclass
class CompiledPipeline:
    """What was compiled and what compiling has cost so far: graphs per (network, latent size),
    and the shapes that ran eager."""

    networks: list[str]
    backend: str
    mode: str | None
    buckets: ShapeBuckets
    graphs: Counter = field(default_factory=Counter)
    eager_shapes: set = field(default_factory=set)

    def recompiles(self) -> int:
        """Graphs compiled again for a (network, size) that already had one: 0 is a clean engine."""
        return sum(n - 1 for n in self.graphs.values() if n > 1)


def graph_breaks() -> int:
    """Graph breaks dynamo reported in this process so far (0 is what a clean compile gives)."""
    from torch._dynamo.utils import counters

    return int(sum(counters["graph_break"].values()))


class BucketedForward:
    """A network's ``forward``: compiled at the buckets' sizes (batch padded to a bucket's rows),
    eager at any other size."""

    def __init__(self, name: str, eager: Callable, buckets: ShapeBuckets, scale: int,
                 compiled: CompiledPipeline, options: dict[str, Any], starts_graph_step: bool) -> None:
        self.name, self.eager, self.buckets, self.scale = name, eager, buckets, scale
        self.latent_sizes = buckets.latent_sizes(scale)
        self.compiled, self.starts_graph_step = compiled, starts_graph_step
        self.run_compiled = torch.compile(_undecorated(eager), **options)

    def __call__(self, *args, **kwargs):
        sample = args[0] if args else kwargs["sample"]   # the first parameter of all three forwards
        rows, size = sample.shape[0], tuple(sample.shape[-2:])
        if size not in self.latent_sizes:
            self._note_eager(size, rows)
            return self.eager(*args, **kwargs)
        if self.name == "unet":
            kwargs["cross_attention_kwargs"] = _masks_per_row(kwargs.get("cross_attention_kwargs"), sample,
                                                              self.scale)
        most = self.buckets.rows[-1]
        if rows <= most:
            return self._run(rows, size, args, kwargs, new_graph_step=self.starts_graph_step and sample.is_cuda)
        # More rows than the largest bucket (worker.engine.shape_buckets says why it is 8): calls
        # of the same graph, bucket-sized. Each call's outputs are copied out before the next one:
        # with CUDA graphs the next replay writes where the last one's outputs lie.
        parts = []
        for start in range(0, rows, most):
            part_args, part_kwargs = tree_map(lambda x, at=start: _row_slice(x, rows, at, most), (args, kwargs))
            out = self._run(min(most, rows - start), size, part_args, part_kwargs, new_graph_step=sample.is_cuda)
            parts.append(tree_map(lambda x: x.clone() if torch.is_tensor(x) and x.is_cuda else x, out))
        return _cat_rows(parts)

    def _run(self, rows: int, size: tuple[int, int], args: tuple, kwargs: dict, new_graph_step: bool):
        padded = self.buckets.rows_for(rows)
        args, kwargs = tree_map(lambda x: _pad_rows(x, rows, padded), (args, kwargs))
        tree_map(lambda x: _mark_batch(x, padded, self.buckets.rows), (args, kwargs))
        if new_graph_step:
            torch.compiler.cudagraph_mark_step_begin()
        from torch._dynamo.utils import counters

        before = counters["stats"]["unique_graphs"]
        out = self.run_compiled(*args, **kwargs)
        self.compiled.graphs[(self.name, size)] += counters["stats"]["unique_graphs"] - before
        return out if padded == rows else tree_map(lambda x: _trim_rows(x, padded, rows), out)

    def _note_eager(self, size: tuple[int, int], rows: int) -> None:
        key = (self.name, size)
        if key not in self.compiled.eager_shapes:
            self.compiled.eager_shapes.add(key)
            log.info("%s: latents %dx%d x %d rows are not a compiled shape (sizes %s): eager",
                     self.name, size[1], size[0], rows, list(self.buckets.sizes))


def _pad_rows(x: Any, rows: int, padded: int) -> Any:
    """A batch tensor with its last row repeated up to ``padded`` rows (rows are independent in
    these networks: the extra ones change nothing in the others, and are cut off after). Copies
    of the row, not one expanded view: ``cat`` keeps channels-last only when all its inputs have
    it, and an expanded view of two rows or more does not (the graph's stride guard then failed
    and compiled again)."""
    if not torch.is_tensor(x) or x.dim() == 0 or x.shape[0] != rows or padded == rows:
        return x
    return torch.cat([x, *[x[-1:]] * (padded - rows)])


def _mark_batch(x: Any, padded: int, rows: tuple[int, ...]) -> None:
    """Mark a batch tensor's rows as the graph's one dynamic size, within the buckets' range: a
    guard the trace puts on the rows inside that range fails the first compile (the warm-up)
    instead of compiling a second graph later. The batch stays a backed size, traced with the
    first call's value as a hint: an unbacked one (``mark_unbacked``) has none, and the fake
    convolution then cannot tell a channels-last output from a contiguous one, so inductor's
    code asserted the wrong strides (measured: notes/i19-recompile.md)."""
    if torch.is_tensor(x) and x.dim() > 0 and x.shape[0] == padded:
        torch._dynamo.mark_dynamic(x, 0, min=rows[0], max=rows[-1])


def _row_slice(x: Any, rows: int, start: int, count: int) -> Any:
    return x[start:start + count] if torch.is_tensor(x) and x.dim() > 0 and x.shape[0] == rows else x


def _cat_rows(parts: list) -> Any:
    """The outputs of bucket-sized calls joined back into one batch (same structure as each)."""
    columns = [tree_flatten(part)[0] for part in parts]
    joined = [torch.cat(leaves) if torch.is_tensor(leaves[0]) else leaves[0] for leaves in zip(*columns)]
    return tree_unflatten(joined, tree_flatten(parts[0])[1])


def _trim_rows(x: Any, padded: int, rows: int) -> Any:
    return x[:rows] if torch.is_tensor(x) and x.dim() > 0 and x.shape[0] == padded else x


def _undecorated(forward: Callable) -> Callable:
    """A module's bound ``forward`` without diffusers' ``apply_lora_scale`` decorator. Dynamo keeps
    compiled graphs per code object, at most ``recompile_limit`` (8) of them, and a fullgraph
    compile past that fails: the decorator's ``wrapper`` is one code object for both the UNet
    and the ControlNet, so with four sizes the two filled it between them (and a fifth size would
    have sent the engine eager). Unwrapped, each network's cache holds its own sizes. What the
    decorator does, scaling PEFT LoRA layers by ``cross_attention_kwargs["scale"]``, has nothing
    to act on here: the compiled engine's LCM-LoRA is baked into the weights (worker.engine.
    baked_lora) and no caller passes a scale."""
    function, module = getattr(forward, "__func__", None), getattr(forward, "__self__", None)
    if function is None or module is None:
        return forward
    return types.MethodType(inspect.unwrap(function), module)


def _masks_per_row(cross_attention_kwargs: dict | None, sample: torch.Tensor, scale: int) -> dict:
    """The IP-Adapter's face-region mask as one per row, all ones without a face region: one
    graph serves jobs with and without the region, and single and per-job masks."""
    kwargs = dict(cross_attention_kwargs or {})
    rows, (height, width) = sample.shape[0], sample.shape[-2:]
    # IPAdapterMaskProcessor's layout: [rows, 1, height, width] at the output (pixel) size
    masks = kwargs.get("ip_adapter_masks") or [sample.new_ones(1, 1, height * scale, width * scale)]
    kwargs["ip_adapter_masks"] = [m.repeat(rows, 1, 1, 1) if m.shape[0] == 1 else m.contiguous() for m in masks]
    return kwargs


def _float_timestep(_module, args, kwargs):
    """LCM hands the networks int64 timesteps, Euler float32 ones: one dtype keeps one compiled
    graph for both modes (the time embedding computes in float32 either way)."""
    if len(args) > 1 and torch.is_tensor(args[1]):
        args = (args[0], args[1].float(), *args[2:])
    elif torch.is_tensor(kwargs.get("timestep")):
        kwargs["timestep"] = kwargs["timestep"].float()
    return args, kwargs


def compile_pipeline(pipe, buckets: ShapeBuckets, mode: str | None = "reduce-overhead",
                     backend: str = "inductor") -> CompiledPipeline:
    """Compile UNet, ControlNet (when the pipeline has one) and VAE decoder in place, for the
    buckets' shapes. Compilation itself happens lazily, at the first call of each size (the
    warm-up: worker.engine.fast_mode.warm_up)."""
    options: dict[str, Any] = {"fullgraph": True, "dynamic": False, "backend": backend}
    if backend == "inductor" and mode not in (None, "default"):
        options["mode"] = mode
    # one cache entry per network and size: more sizes than dynamo's limit would fail the compile
    limit = torch._dynamo.config.recompile_limit
    torch._dynamo.config.recompile_limit = max(limit, len(buckets.sizes))
    controlnet = getattr(pipe, "controlnet", None)
    compiled = CompiledPipeline(networks=[], backend=backend, mode=mode, buckets=buckets)
    # Without IdentityNet (the SDXL fallback) the UNet is the first graph of a step.
    networks = [("controlnet", controlnet, True), ("unet", pipe.unet, controlnet is None),
                ("vae.decoder", pipe.vae.decoder, True)]
    for name, module, starts_step in networks:
        if module is None:
            continue
        if name != "vae.decoder":
            module.register_forward_pre_hook(_float_timestep, with_kwargs=True)
        module.forward = BucketedForward(name, module.forward, buckets, int(pipe.vae_scale_factor), compiled, options,
                                         starts_step)
        compiled.networks.append(name)
    log.info("torch.compile (%s, mode=%s, fullgraph, static sizes %s, rows %s): %s", backend, mode,
             list(buckets.sizes), list(buckets.rows), ", ".join(compiled.networks))
    return compiled


def uncompile_pipeline(pipe) -> None:
    """Back to the eager forwards (the compiled ones were instance attributes over the class's)."""
    for module in (pipe.unet, getattr(pipe, "controlnet", None), pipe.vae.decoder):
        if module is not None:
            module.__dict__.pop("forward", None)
