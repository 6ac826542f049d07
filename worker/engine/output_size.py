"""The sizes the engine works at, read from the loaded UNet rather than from the profile's name.

* ``working_size``: the UNet's native square size (SDXL 1024, tiny 128). The face-detail pass
  redraws its crops at this size.
* ``default_size``: the output size when a request names none. SDXL was fine-tuned on
  aspect-ratio buckets of about one megapixel; 832×1216 is the tallest portrait bucket before
  the frame turns into a strip (a 2:3 frame), and it puts 29% more pixels on a standing figure
  than 768×1024 at 1.04 MP instead of 0.79 MP. A smaller UNet (the tiny profile) keeps the same
  shape at its own native scale, so CPU runs stay small.

Example::

    default_size(engine.pipe)     # (832, 1216) for SDXL, (104, 152) for the tiny profile
"""

from __future__ import annotations

from shared.size_presets import FULL_BODY_BUCKET

SDXL_NATIVE = 1024


def working_size(pipe) -> int:
    """The UNet's native square size in pixels."""
    return int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)


def default_size(pipe) -> tuple[int, int]:
    """(width, height) for a request that names no size."""
    native = working_size(pipe)
    if native >= SDXL_NATIVE:
        return FULL_BODY_BUCKET
    scale = native / SDXL_NATIVE
    return tuple(max(64, int(round(side * scale / 8)) * 8) for side in FULL_BODY_BUCKET)
