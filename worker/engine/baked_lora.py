"""The LCM-LoRA baked into the UNet's own weights, with no PEFT wrapper left in the forward path.

Why: PEFT keeps every LoRA'd layer wrapped even when the LoRA is fused: a Python call and an
extra dispatch per layer per step (launch overhead on a GPU) and a graph full of wrappers for
``torch.compile``. Baking puts each wrapper's base layer back in its place and keeps, off the
forward path, what a mode switch needs:

- the exact base weight, copied to host memory once, so quality mode gets it back bit for bit
  and switching back and forth never drifts (an add/subtract round trip in fp16 would);
- the PEFT layer itself, whose ``get_delta_weight`` recomputes the low-rank delta on a switch
  (its rank-r factors are small; a dense delta per weight would double the UNet's memory).

Weights change in place, so their addresses stay put and CUDA graphs captured over them stay
valid across switches.

Example::

    baked = BakedLora.bake(pipe.unet, "lcm")   # wrappers gone, weights are the base weights
    baked.fuse()                                # W = base + delta   (fast mode)
    baked.unfuse()                              # W = base, exactly  (quality mode)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)


@dataclass
class _BakedWeight:
    weight: torch.nn.Parameter       # the base layer's weight, now in the forward path unwrapped
    base: torch.Tensor               # its exact base value, in host memory
    lora_layer: torch.nn.Module      # the PEFT layer that was removed (computes the delta)
    adapter: str


def tuner_layers(model: torch.nn.Module) -> list[str]:
    """Names of the PEFT tuner layers (LoRA wrappers) still inside ``model``."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [name for name, module in model.named_modules() if isinstance(module, BaseTunerLayer)]


class BakedLora:
    def __init__(self, weights: list[_BakedWeight]) -> None:
        self.weights = weights
        self.fused = False

    @classmethod
    @torch.no_grad()
    def bake(cls, model: torch.nn.Module, adapter: str) -> BakedLora:
        """Replace every PEFT LoRA wrapper in ``model`` by its base layer. The wrappers must not be
        merged (the base weights are what is kept)."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        wrapped = [(n, m) for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)]
        weights = []
        for name, layer in wrapped:
            if layer.merged:
                raise RuntimeError(f"{name}: unmerge the LoRA before baking it (its base weight is needed)")
            if adapter not in layer.lora_A:
                continue
            base_layer = layer.get_base_layer()
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, base_layer)
            host = base_layer.weight.detach().to("cpu", copy=True)
            if base_layer.weight.is_cuda:
                host = host.pin_memory()
            weights.append(_BakedWeight(base_layer.weight, host, layer, adapter))
        _forget_peft_config(model)
        log.info("lora %s baked into %d weights; %d PEFT wrappers left", adapter, len(weights), len(tuner_layers(model)))
        return cls(weights)

    @torch.no_grad()
    def fuse(self) -> None:
        """W = base + delta, each computed from the exact base (never from the current value)."""
        for w in self.weights:
            base = w.base.to(w.weight.device, non_blocking=True)
            delta = w.lora_layer.get_delta_weight(w.adapter)
            w.weight.copy_((base.float() + delta.float().reshape(base.shape)).to(w.weight.dtype))
        self.fused = True

    @torch.no_grad()
    def rebase(self) -> None:
        """Take the weights as they are now as the base (a base checkpoint was copied in while
        unfused: worker.engine.base_switch); the next ``fuse`` adds the delta to them."""
        if self.fused:
            raise RuntimeError("unfuse the LoRA before taking new base weights")
        for w in self.weights:
            w.base.copy_(w.weight.detach())

    @torch.no_grad()
    def unfuse(self) -> None:
        """W = base, bit for bit."""
        for w in self.weights:
            w.weight.copy_(w.base.to(w.weight.device, non_blocking=True))
        self.fused = False


def _forget_peft_config(model: torch.nn.Module) -> None:
    # diffusers consults these to decide whether PEFT layers need scaling or unloading; with the
    # wrappers gone there is nothing for it to find.
    if hasattr(model, "peft_config"):
        del model.peft_config
    if getattr(model, "_hf_peft_config_loaded", False):
        model._hf_peft_config_loaded = False
