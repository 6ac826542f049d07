"""The shapes the compiled engine is compiled for: a few output sizes and a few row counts.

A compiler that reasons about symbolic heights and widths spends minutes on it (bench/README.md:
IdentityNet alone took ~6 min on an H100 with ``dynamic=True``), so the compiled engine sees
static sizes only:

* **sizes**: the output sizes the web page offers (``shared.size_presets``: the small ones for a
  small UNet, as the page offers them to the tiny profile), the engine's default size (a job that
  names none) and its working size (the face-detail pass's square crops). A job at any other size
  runs the eager networks, and the log says so once per size;
* **rows**: a denoise pass's batch (images, twice that under classifier-free guidance) is padded
  up to the next power of two from 2 (a batch of one would be special-cased by the compiler; two
  costs little more), at most ``MOST_ROWS``. The padding rows are thrown away. The batch
  dimension is the one dimension the compiler treats as symbolic, so every row count shares one
  compiled graph per size, and CUDA graphs record one replay per row count. A pass of more rows
  (quality mode's 5 to 8 images) runs as several calls of the 8-row graph.

Why 8 rows at most: the compiler traces the batch with the first call's value as a hint, and the
CPU convolution picks its backend from it (for an unstrided conv the choice changes at 16 rows),
so a graph traced at 2 rows is valid for 2 to 15 rows only: a 16-row bucket compiled a second
graph per network (bench/README.md, "Compiled engine on the CPU").

Example::

    buckets = ShapeBuckets.for_engine(working=128, default=(104, 152), max_images=8)
    buckets.sizes            # ((256, 256), (512, 512), (104, 152), (128, 128))
    buckets.rows             # (2, 4, 8)
    buckets.rows_for(3)      # 4
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.size_presets import size_presets
from worker.engine.output_size import SDXL_NATIVE

MIN_ROWS = 2
MOST_ROWS = 8


@dataclass(frozen=True)
class ShapeBuckets:
    sizes: tuple[tuple[int, int], ...]   # (width, height) in pixels
    rows: tuple[int, ...]                # batch rows a compiled network is called with, ascending

    @classmethod
    def for_engine(cls, working: int, default: tuple[int, int], max_images: int,
                   sizes: tuple[tuple[int, int], ...] | None = None) -> ShapeBuckets:
        """The buckets of an engine whose UNet works at ``working`` px and makes ``default``
        images when a job names no size, for passes of up to ``max_images`` images. ``sizes``
        replaces the offered sizes (a bench or a test compiling one small shape)."""
        if sizes is None:
            # a UNet smaller than SDXL's is the tiny profile's: the page offers it the small sizes
            offered = size_presets(["tiny"] if working < SDXL_NATIVE else [])
            sizes = tuple(dict.fromkeys([*offered, tuple(default), (working, working)]))
        return cls(sizes=tuple(sizes), rows=row_counts(min(2 * max_images, MOST_ROWS)))

    def rows_for(self, rows: int) -> int | None:
        """The row count a pass of ``rows`` rows is padded to; None above the largest (such a pass
        runs as several calls of the largest)."""
        return next((r for r in self.rows if r >= rows), None)

    def has_size(self, width: int, height: int) -> bool:
        return (int(width), int(height)) in self.sizes

    def latent_sizes(self, scale: int) -> frozenset[tuple[int, int]]:
        """(height, width) of the latents of each size (what the UNet and the VAE decoder see)."""
        return frozenset((h // scale, w // scale) for w, h in self.sizes)


def row_counts(most: int) -> tuple[int, ...]:
    """Powers of two from ``MIN_ROWS`` up to the first one that holds ``most`` rows."""
    counts = [MIN_ROWS]
    while counts[-1] < most:
        counts.append(counts[-1] * 2)
    return tuple(counts)
