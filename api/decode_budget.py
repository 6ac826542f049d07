"""How many bytes of decoded photos one gateway process holds at once.

Each decode reserves its decoded size (read from the header before a pixel is decoded) and waits
while the budget is spent. A JPEG is decoded at a reduced scale small enough to take its share;
a PNG, WebP, HEIC or AVIF cannot be, so a large one (a 4032x3024 phone PNG is 49 MB) waits until
enough is free. A photo larger than the whole budget waits until it is the only decode, so the
process never holds more than max(budget, the largest photo the pixel cap lets through).

That bound also needs freed decodes to leave the process: glibc keeps freed blocks below its
mmap threshold (which it raises as far as 32 MB once such a block is freed) in per-thread arenas,
so eight threads that each decoded a 160 MB PNG in Pillow's 16 MiB blocks held 1.5 GB after
they were done, one at a time. A fixed threshold makes every allocation over 1 MiB its own
mapping, handed back when freed.

Example::

    budget = DecodeBudget(4 * 32 << 20)
    with budget.reserve(48_771_072):
        image.load()
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
_MMAP_THRESHOLD_BYTES = 1 << 20


class DecodeBudget:
    def __init__(self, total_bytes: int) -> None:
        self.total_bytes = total_bytes
        self.free_bytes = total_bytes
        self._changed = threading.Condition()
        _return_freed_blocks()

    @contextmanager
    def reserve(self, nbytes: int) -> Iterator[None]:
        """Block until ``nbytes`` (at most the whole budget) are free, hold them for the block."""
        taken = min(max(nbytes, 0), self.total_bytes)
        with self._changed:
            self._changed.wait_for(lambda: self.free_bytes >= taken)
            self.free_bytes -= taken
        try:
            yield
        finally:
            with self._changed:
                self.free_bytes += taken
                self._changed.notify_all()


class Unbounded:
    """No budget: the command line's single decode (``idbody generate``) and the pure tests."""

    @contextmanager
    def reserve(self, nbytes: int) -> Iterator[None]:
        yield


def _return_freed_blocks() -> None:
    """Large allocations become their own mappings (see the module docstring); a no-op off glibc."""
    try:
        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)
    except (OSError, AttributeError):
        pass  # another C library: its allocator decides
