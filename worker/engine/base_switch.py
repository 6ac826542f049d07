"""Which base checkpoint the resident networks hold, and switching to another one in place.

One base is resident at a time. A switch copies the other base's tensors into the resident UNet
and text encoders (and the VAE when the engine runs the base's own, not the fp16-fix one) with
``copy_``, tensor by tensor from its safetensors files, so:

- everything InstantID added stays: the IdentityNet ControlNet, the IP-Adapter's image projection
  (``unet.encoder_hid_proj``) and its attention processors (``to_k_ip``/``to_v_ip``) are not base
  tensors and are never touched; the pose ControlNet likewise;
- the LCM-LoRA is taken out of the weights first (quality mode: PEFT unfuses, or the baked LoRA
  restores its base copy), the new base copied in, the baked LoRA's base copy retaken, and the next
  pass's mode fuses the delta onto the new base;
- every parameter keeps its storage, dtype (fp8 storage casts on copy), memory format and device:
  fused q/k/v views write through to the fused weight, and compiled graphs (CUDA graphs included),
  which read the parameters at their addresses, stay valid: nothing recompiles;
- peak memory grows by one tensor, never a second UNet: the memory plan is unchanged, since every
  base has the profile's architecture exactly (``idbody models add-base`` checks names and shapes).

Example::

    engine.bases.use("juggernaut")   # logs "base model tiny -> juggernaut: 512 tensors in 0.04s"
    engine.bases.resident            # "juggernaut"
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from worker.models.bases import BaseCheckpoint, find_base, is_weight, tensor_name, weight_files, weight_variant

if TYPE_CHECKING:
    from worker.engine.devices import DevicePolicy
    from worker.engine.lcm_mode import ModeSwitch

log = logging.getLogger(__name__)

TEXT_AND_UNET = ("unet", "text_encoder", "text_encoder_2")


class BaseSwitch:
    def __init__(self, pipe, modes: ModeSwitch, policy: DevicePolicy, bases: list[BaseCheckpoint],
                 components: tuple[str, ...] = TEXT_AND_UNET) -> None:
        self.pipe, self.modes, self.policy = pipe, modes, policy
        self.bases = bases
        self.components = components
        self.resident: str | None = next(b.name for b in bases if b.default)
        self.last_switch_s: float | None = None

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.bases]

    def find(self, name: str | None) -> BaseCheckpoint:
        """The base a job names (the default for None), or IdentityBodyError(unknown_base_model)."""
        return find_base(self.bases, name)

    def describe(self) -> list[dict]:
        return [b.describe() for b in self.bases]

    @torch.no_grad()
    def use(self, name: str | None) -> None:
        """Make ``name`` (None: the default) the resident base; nothing happens when it already is."""
        base = self.find(name)
        if base.name == self.resident:
            return
        started, previous, mode = time.perf_counter(), self.resident, self.modes.mode
        self.modes.use("quality")   # the LoRA out of the weights: what is resident is the base's own
        # a copy that fails half way leaves a mix of two bases: until one completes, no base is
        # resident, so the next pass copies a whole base whichever it names
        self.resident = None
        tensors = sum(copy_into(getattr(self.pipe, c), base.folder / c, self.policy) for c in self.components)
        if self.modes.baked is not None:
            self.modes.baked.rebase()
        if mode is not None:
            self.modes.use(mode)
        if self.policy.device == "cuda":
            torch.cuda.synchronize()
        self.resident, self.last_switch_s = base.name, time.perf_counter() - started
        log.info("base model %s -> %s: %d tensors in %.2fs", previous, base.name, tensors, self.last_switch_s,
                 extra={"event": "engine.base_switch", "from": previous, "to": base.name,
                        "seconds": round(self.last_switch_s, 3)})


def use_base(engine, name: str | None) -> None:
    """Switch ``engine``'s resident base when a pass asks for another (the runner calls this)."""
    bases = getattr(engine, "bases", None)   # test engines built by hand carry none
    if bases is not None:
        bases.use(name)
    elif name is not None:
        raise ValueError(f"base_model {name!r}: this engine has no base checkpoints to switch between")


def resident_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's tensors under the names a base's weight files use (``tensor_name``): a
    PEFT-wrapped layer's own weight is its ``base_layer``'s; the LoRA factors are no base tensor."""
    tensors = {}
    for name, tensor in module.state_dict(keep_vars=True).items():
        if ".lora_" in name:
            continue
        tensors[tensor_name(name.replace(".base_layer.", "."))] = tensor
    return tensors


@torch.no_grad()
def copy_into(module: torch.nn.Module, folder: Path, policy: DevicePolicy) -> int:
    """Copy the weights in ``folder`` (one component of a base) into ``module`` in place, one
    tensor at a time; returns how many. The weight variant is the one the loader would pick."""
    from safetensors import safe_open

    targets = resident_tensors(module)
    files = weight_files(folder, weight_variant(folder, policy))
    if not files:
        raise RuntimeError(f"{folder} holds no safetensors weights (idbody models verify checks a base's files)")
    count = 0
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for key in filter(is_weight, handle.keys()):
                target = targets.get(tensor_name(key))
                if target is None:
                    raise RuntimeError(f"{file}: tensor {key} has no place in the resident {type(module).__name__}")
                target.copy_(handle.get_tensor(key))
                count += 1
    return count
