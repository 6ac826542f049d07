"""Output sizes the web page offers, and the small default the tiny profile serves.

The ranges themselves live in ``shared.params`` (64-2048, multiples of 8); these are only the
choices a person picks from. The gateway hands both to the page through ``GET /api/v1/info``.

Example::

    SIZE_PRESETS[0]          # (256, 256)
    TINY_DEFAULT_SIZE        # (256, 256)
"""

from __future__ import annotations

from typing import Any

# (width, height): square thumbnails, a square portrait, and the API's full-body default
SIZE_PRESETS: tuple[tuple[int, int], ...] = ((256, 256), (512, 512), (768, 1024))

# The tiny profile's images are noise by design; a small default makes a first job take seconds.
TINY_DEFAULT_SIZE: tuple[int, int] = (256, 256)


def size_defaults(settings: Any) -> dict[str, int]:
    """The deployment's default output size (settings.default_width / default_height), as the
    parameters a submit that names no size gets.

    Example::

        size_defaults(Settings(default_width=256, default_height=256))   # {"width": 256, "height": 256}
    """
    out = {"width": settings.default_width, "height": settings.default_height}
    return {name: value for name, value in out.items() if value is not None}
