"""Output sizes the web page offers, and the small default the tiny profile serves.

The ranges themselves live in ``shared.params`` (64-2048, multiples of 8); these are only the
choices a person picks from. The gateway hands both to the page through ``GET /api/v1/info``.

Example::

    SIZE_PRESETS[0]          # (256, 256)
    TINY_DEFAULT_SIZE        # (256, 256)
"""

from __future__ import annotations

from typing import Any

# (width, height): square thumbnails, a square portrait, and SDXL's full-body bucket
SIZE_PRESETS: tuple[tuple[int, int], ...] = ((256, 256), (512, 512), (832, 1216))

# A deployment that runs only the tiny profile offers sizes up to this many pixels: its images are
# noise by design, and one denoise step of 4 images costs 0.40 s at 512x512 but 1.47 s at 768x1024
# on two idle cores (python -m bench.tiny_sizes --threads 2 --steps 3, 2026-11-26).
TINY_MAX_PIXELS = 512 * 512

# The tiny profile's images are noise by design; a small default makes a first job take seconds.
TINY_DEFAULT_SIZE: tuple[int, int] = (256, 256)


# SDXL's 832x1216 portrait bucket: the engine's output size for a request that names none (a smaller
# UNet, the tiny profile's, keeps its shape at its own scale: worker.engine.output_size)
FULL_BODY_BUCKET = (832, 1216)


def size_defaults(settings: Any) -> dict[str, int]:
    """The deployment's default output size (settings.default_width / default_height), as the
    parameters a submit that names no size gets.

    Example::

        size_defaults(Settings(default_width=256, default_height=256))   # {"width": 256, "height": 256}
    """
    out = {"width": settings.default_width, "height": settings.default_height}
    return {name: value for name, value in out.items() if value is not None}


def default_output_size(settings: Any, workers: list[dict[str, Any]]) -> dict[str, int]:
    """What a job that names no size gets: the deployment's setting, else the size a live worker's
    engine publishes in its heartbeat, else SDXL's full-body bucket.

    Example::

        default_output_size(Settings(), [{"default_size": [104, 152]}])   # {"width": 104, "height": 152}
    """
    configured = size_defaults(settings)
    published = next((w["default_size"] for w in workers if w.get("default_size")), FULL_BODY_BUCKET)
    return {"width": int(published[0]), "height": int(published[1]), **configured}


def size_presets(profiles: list[str]) -> list[tuple[int, int]]:
    """The sizes the page offers for the live workers' profiles: all of them, or only the small
    ones when every worker runs the tiny profile.

    Example::

        size_presets(["tiny"])        # [(256, 256), (512, 512)]
    """
    if profiles and set(profiles) == {"tiny"}:
        return [size for size in SIZE_PRESETS if size[0] * size[1] <= TINY_MAX_PIXELS]
    return list(SIZE_PRESETS)
