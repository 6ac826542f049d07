"""Face-region emphasis: IdentityNet's residuals and the IP-Adapter's face attention act only on
the face region of the layout, so identity features do not bleed over body and background.

This is the idea behind the official InstantID app's "Enhance non-face region" switch (on there
by default): a mask that is 1 on the face box scales the ControlNet residuals at every UNet level
and the image-attention output of every IP-Adapter processor. We write it with diffusers' own
means where they exist:

* IP-Adapter: ``cross_attention_kwargs={"ip_adapter_masks": [...]}``, the mask preprocessed by
  ``IPAdapterMaskProcessor`` — diffusers' IP-Adapter processors resize it to each attention
  layer and multiply the face attention by it.
* IdentityNet: diffusers has no conditioning mask for a plain ``ControlNetModel``, so the
  pipeline's denoise loop (step 8 of InstantIDPipeline) multiplies each residual IdentityNet
  returns by the mask area-resized to that residual's size (``restrict``); the UNet adds exactly
  these tensors to its skips.

What the mask cannot do: the UNet's self-attention and convolutions still carry the face
region's features to the rest of the picture, so far pixels are shielded from the face
embedding's direct paths, not sealed off (tests/test_face_region.py measures how much).

Example::

    masks = face_region_masks(region, device, torch.float16)
    down, mid = masks.restrict(*identitynet(...))
    unet(..., cross_attention_kwargs=masks.ip_adapter_kwargs(), down_block_additional_residuals=down, ...)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class FaceRegionMasks:
    """The face region as the two consumers want it: a [1 or rows, 1, H, W] float mask at full
    size for IdentityNet, and the IPAdapterMaskProcessor tensor (same rows) for the attention
    processors, which resize it per layer and apply row r of it to image r of the batch."""

    full: torch.Tensor
    ip_adapter: torch.Tensor

    def at(self, height: int, width: int) -> torch.Tensor:
        """The mask at a residual's size: the share of each cell that is face (area resize)."""
        return F.interpolate(self.full, size=(height, width), mode="area")

    def ip_adapter_kwargs(self) -> dict:
        return {"ip_adapter_masks": [self.ip_adapter]}

    def restrict(self, down: list[torch.Tensor], mid: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """IdentityNet's residuals kept to the face: each multiplied by the mask at its size."""
        return ([r * self.at(*r.shape[-2:]).to(r.dtype) for r in down],
                mid * self.at(*mid.shape[-2:]).to(mid.dtype))


def face_region_masks(region: np.ndarray, device, dtype: torch.dtype, repeat: int = 1) -> FaceRegionMasks:
    """Both masks from a (height, width) array that is 1 on the face and 0 elsewhere
    (worker.engine.face_geometry.region_mask), shared by every image of the pass; or from a
    (rows, height, width) stack, one mask per image of a micro-batch. ``repeat`` stacks the
    per-image masks that many times, for a pass that runs each image more than once (2 under
    classifier-free guidance: negative rows, then positive rows).

    Example::

        face_region_masks(region_mask((832, 1216), box), "cuda", torch.float16)
    """
    from diffusers.image_processor import IPAdapterMaskProcessor
    from PIL import Image

    region = np.asarray(region, dtype=np.float32)
    if region.ndim not in (2, 3):
        raise ValueError(f"face_region must be (height, width) or (images, height, width), got shape {region.shape}")
    stack = region[None] if region.ndim == 2 else region
    height, width = stack.shape[-2:]
    full = torch.from_numpy(np.ascontiguousarray(stack))[:, None].to(device=device, dtype=dtype)
    as_images = [Image.fromarray((np.clip(r, 0, 1) * 255).astype(np.uint8), mode="L") for r in stack]
    ip_mask = IPAdapterMaskProcessor().preprocess(as_images, height=height, width=width)
    ip_mask = ip_mask.to(device=device, dtype=dtype)
    if len(stack) > 1 and repeat > 1:  # one mask for all broadcasts; a stack must match the rows
        full, ip_mask = torch.cat([full] * repeat), torch.cat([ip_mask] * repeat)
    return FaceRegionMasks(full=full, ip_adapter=ip_mask)
