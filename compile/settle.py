"""Waiting until a benchmark worker has stopped using the CPU, and how much it used after its answer.

Runtimes keep their worker threads spinning after an inference returns, so the next one starts without a wake-up:
TVM's thread pool yields in a loop ~0.2 s (``TVM_THREAD_POOL_SPIN_COUNT``), ONNX Runtime's spins for a while too.
On a 2-core machine a backend measured right after such a process shares the cores with its spinning threads and
is timed slower than it is. ``edgecv bench`` therefore waits, after each timed call, until every thread of that
worker is asleep before timing the next backend, and reports the CPU time the worker spent meanwhile: what that
runtime costs the rest of an edge box (video decoding, other cameras) after each frame.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """CPU time (user + system, all threads) process ``pid`` has used, in seconds (clock-tick resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * _TICK_S  # utime, stime: fields 14 and 15 of proc(5)


def running_threads(pid: int) -> int:
    """How many threads of process ``pid`` are running or runnable (state R) now."""
    count = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            count += stat.read_text().rsplit(")", 1)[1].split()[0] == "R"
        except (OSError, IndexError):  # the thread ended meanwhile
            pass
    return count


def settle(pid: int, quiet_polls: int = 3, poll_s: float = 0.005, timeout_s: float = 3.0) -> float:
    """Wait until no thread of ``pid`` has run for ``quiet_polls`` polls in a row (or ``timeout_s``); the CPU
    seconds it used in the meantime."""
    start = cpu_s(pid)
    quiet, deadline = 0, time.monotonic() + timeout_s
    while quiet < quiet_polls and time.monotonic() < deadline:
        quiet = 0 if running_threads(pid) else quiet + 1
        time.sleep(poll_s)
    return cpu_s(pid) - start
