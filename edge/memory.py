"""Keep a long-running edge process's memory flat.

glibc serves large blocks (frames, tensors) with their own mappings, returned to the system when freed, but
each time such a block is freed it raises that size threshold (up to 32 MB): after a few frames, frame-sized
buffers come from the heap instead, and the heap, fragmented by threads freeing them in other orders, keeps
what it took. Measured on the edge loop (SSD-512, 60 frames of vtest.avi): resident memory crept up by ~0.3 MB
per frame and peaked 22 MB higher than with the threshold pinned, which keeps memory flat.
"""
from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3          # mallopt parameters, from glibc's malloc.h
MMAP_THRESHOLD = 128 * 1024    # glibc's own initial value, kept fixed


def pin_mmap_threshold() -> bool:
    """Fix glibc's mmap threshold at its initial 128 KB; False where the C library has no ``mallopt`` (musl)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):
        return False


def status_mb(field: str = "VmHWM") -> float:
    """A memory line of /proc/self/status in MB: ``VmHWM`` (peak resident, the default) or ``VmRSS`` (now)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
