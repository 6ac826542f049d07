"""Per-image IP-Adapter and IdentityNet scales, held in tensors instead of Python floats.

Two reasons, one mechanism:

- micro-batching: the images of one denoise pass come from different jobs, each with its own
  ``ip_adapter_scale`` and ``controlnet_conditioning_scale``;
- torch.compile: a Python float read inside a compiled graph is a constant it guards on, so every
  new scale a client sends would recompile the UNet (minutes). A tensor is an input: any value.

The IP-Adapter's image branch adds ``scale * attention(q, k_ip, v_ip)``; attention is linear in its
values, so multiplying ``to_v_ip``'s output row by row is the same as diffusers' scale, with the
processors' own scale held at 1. IdentityNet multiplies its residuals by ``conditioning_scale``,
which diffusers' ControlNet accepts as a tensor; a pre-hook hands it the per-row one.

Example::

    scales = RowScales.install(pipe)
    scales.set(ip=[0.8, 0.5], control=[0.8, 0.8], guidance=False)   # before the pipeline call
"""

from __future__ import annotations

import torch

MAX_ROWS = 128  # 64 images under classifier-free guidance


class RowScales:
    def __init__(self, device: torch.device, dtype: torch.dtype) -> None:
        # One buffer, updated in place: its address never changes, so CUDA graphs may read it.
        self.ip = torch.ones(MAX_ROWS, device=device, dtype=dtype)
        self.control: torch.Tensor | None = None
        self.device, self.dtype = device, dtype

    @classmethod
    def install(cls, pipe) -> RowScales:
        """Hook the UNet's IP-Adapter value projections and the ControlNet; set the processors'
        own scales to 1 (the hooks carry the scale from now on)."""
        param = next(pipe.unet.parameters())
        scales = cls(param.device, param.dtype)
        for processor in pipe.unet.attn_processors.values():
            if hasattr(processor, "to_v_ip"):
                processor.scale = [1.0] * len(processor.scale)
                for projection in processor.to_v_ip:
                    projection.register_forward_hook(scales._scale_ip_values)
        pipe.controlnet.register_forward_pre_hook(scales._scale_control, with_kwargs=True)
        return scales

    def _scale_ip_values(self, _module, _args, output: torch.Tensor) -> torch.Tensor:
        # output: [rows, (images,) tokens, channels]; one scale per row
        rows = output.shape[0]
        return output * self.ip[:rows].view(rows, *([1] * (output.dim() - 1)))

    def _scale_control(self, _module, args, kwargs):
        if self.control is None:
            raise RuntimeError("RowScales.set was not called before the ControlNet ran")
        rows = kwargs["sample"].shape[0] if "sample" in kwargs else args[0].shape[0]
        if self.control.shape[0] != rows:
            raise RuntimeError(f"ControlNet batch {rows} != {self.control.shape[0]} row scales")
        kwargs["conditioning_scale"] = self.control * kwargs.get("conditioning_scale", 1.0)
        return args, kwargs

    def set(self, ip: list[float], control: list[float], guidance: bool) -> None:
        """One scale per image row; under guidance the pipeline runs [negative rows, positive rows]."""
        if guidance:
            ip, control = ip + ip, control + control
        if len(ip) > MAX_ROWS:
            raise ValueError(f"at most {MAX_ROWS} rows per pass, got {len(ip)}")
        self.ip[: len(ip)].copy_(torch.tensor(ip, dtype=self.dtype), non_blocking=True)
        self.control = torch.tensor(control, dtype=self.dtype).view(-1, 1, 1, 1).to(self.device, non_blocking=True)
