"""Per-call switch between fast mode (LCM-LoRA fused, LCMScheduler) and quality mode (the base
UNet, Euler), without reloading anything.

Choice: the LoRA stays *fused* in fast mode, the default and hot path, so LCM steps cost exactly
what base steps cost. A quality call unfuses it (PEFT subtracts the same delta it added) and
disables the adapter so the base weights run alone; the next fast call enables and fuses again.
A switch costs one pass over the LoRA'd weights (well under a second on a GPU); in fp16 each
fuse/unfuse round trip can leave rounding of about one ulp in the touched weights, which is why
fast stays fused rather than toggling an unfused adapter on every call.

Fast mode's guidance (shared.params.MODE_DEFAULTS: 5 steps at guidance 1.5). InstantID was
trained on portraits and pulls a full-body frame towards a close-up; the one text lever against
that is the negative prompt ("cropped, portrait, close-up, headshot, upper body only, ...",
worker.prompts). A negative prompt exists only under classifier-free guidance (guidance > 1):
at guidance 0 it is never even encoded. So fast mode runs LCM the way the official InstantID app
does (5 steps, guidance 1.5), which keeps the anti-close-up negative, rather than at 8 steps
without guidance. The cost: each step runs the batch twice, 10 UNet + IdentityNet passes per
image against 8 before (+25% denoise work; ``python -m bench.pipeline --full-size`` measures
both). LCM-LoRA was distilled for guidance of about 1-2, so fast mode refuses more than 2.

Example::

    modes = ModeSwitch(pipe, base_scheduler_config, lcm_loaded=True)
    modes.use("quality")        # Euler, base weights
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

LCM_ADAPTER = "lcm"


class ModeSwitch:
    def __init__(self, pipe, scheduler_config, lcm_loaded: bool, fuse_now: bool = True) -> None:
        from diffusers import EulerDiscreteScheduler, LCMScheduler

        self.pipe = pipe
        self.lcm_loaded = lcm_loaded
        # Both configs kept: a mode switch is a scheduler swap, never a reload.
        self.schedulers = {
            "fast": LCMScheduler.from_config(scheduler_config) if lcm_loaded
            else EulerDiscreteScheduler.from_config(scheduler_config),
            "quality": EulerDiscreteScheduler.from_config(scheduler_config),
        }
        self.fused = False
        self.mode: str | None = None
        # Set by the fast engine (worker.engine.fast_mode): the LoRA baked into the weights with
        # no PEFT wrappers; it switches by restoring the exact base weights instead.
        self.baked = None
        if lcm_loaded and fuse_now:
            self._fuse()

    def _fuse(self) -> None:
        if self.baked is not None:
            self.baked.fuse()
        else:
            self.pipe.enable_lora()
            self.pipe.fuse_lora(components=["unet"], adapter_names=[LCM_ADAPTER])
        self.fused = True

    def _unfuse(self) -> None:
        if self.baked is not None:
            self.baked.unfuse()
        else:
            self.pipe.unfuse_lora(components=["unet"])
            self.pipe.disable_lora()
        self.fused = False

    def use(self, mode: str) -> None:
        if mode not in self.schedulers:
            raise ValueError(f"unknown mode {mode!r}")
        if self.lcm_loaded and mode == "fast" and not self.fused:
            self._fuse()
        elif self.lcm_loaded and mode == "quality" and self.fused:
            self._unfuse()
        if mode != self.mode:
            log.info("engine mode %s: %s, lcm-lora %s", mode, type(self.schedulers[mode]).__name__,
                     "fused" if self.fused else ("off" if self.lcm_loaded else "not loaded"))
        self.pipe.scheduler = self.schedulers[mode]
        self.mode = mode
