"""Freed large buffers go back to the system at once: glibc's mmap threshold, fixed.

glibc's malloc serves a block of ``M_MMAP_THRESHOLD`` bytes or more (128 KiB at
first) with a mapping of its own, which ``free`` unmaps.  But each time such a
block is freed, glibc raises the threshold to its size (up to 32 MiB on 64-bit
systems); after that, blocks of that size come from the heaps and the
per-thread arenas, and stay with the process once freed.  A repair that
compresses a large member in pieces on several threads allocates and frees
many buffers of a few MiB on several arenas: lxml's peak resident size was
93 MiB for 74 MiB with the threshold held where it starts.

Setting the threshold (``mallopt``) turns glibc's adjusting off, as the
``MALLOC_MMAP_THRESHOLD_`` environment variable would.  Only the ``fastelf``
command sets it, for its own process (``fastelf repair``); a program that
embeds fastelf keeps its allocator as it is, or sets the same variable.
No measurable cost in time on the repair benchmark.
"""

from __future__ import annotations

import sys

M_MMAP_THRESHOLD = -3          # mallopt's parameter number, from glibc's <malloc.h>
MMAP_THRESHOLD = 1 << 20       # blocks this big or bigger: mapped apart, unmapped when freed


def return_large_blocks() -> bool:
    """Fix glibc's mmap threshold at :data:`MMAP_THRESHOLD` for this process.

    True when it was set; False where there is no ``mallopt`` (musl, other
    systems) or glibc refused the value: nothing changes then."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
