"""The process's memory as /proc tells it (the loop and benchmark report it).

The loop leaves glibc's malloc alone: pinning its mmap threshold would give each frame-sized buffer its own
mapping, returned to the system when freed, but a fresh mapping costs a page fault per 4 KB page on first touch,
every frame. With glibc's default (the threshold rises to the largest freed buffer, so frames are recycled from the
heap) memory stays flat, which `edgecv bench-loop` checks over a long run (docs/performance.md).
"""
from __future__ import annotations

import os


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


def page_cache_note(dropped: bool) -> str:
    """How a benchmark report states the page cache's state (``drop_page_cache``'s result)."""
    return ("page cache dropped before measuring" if dropped else
            "page cache as found (not root): files written recently can read 10+ MB high per process")


def drop_page_cache() -> bool:
    """Drop the kernel's clean page cache (root only), so that the files a measured process maps are read back
    from disk, as after a reboot; whether it was dropped. Benchmarks call it before they measure memory: a process
    that maps files written moments ago (a new environment's libraries, a just-compiled artifact) is charged more
    resident memory for them than for the same files read from disk (large page-cache folios, it seems): by how
    much, docs/performance.md."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
        return True
    except OSError:
        return False
