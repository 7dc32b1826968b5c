"""glibc's mmap threshold pinned by the edge loop: a freed frame-sized buffer goes back to the system."""
from __future__ import annotations

import subprocess
import sys
import textwrap

PROBE = textwrap.dedent("""
    import sys
    import numpy as np
    from edgecv.edge.memory import pin_mmap_threshold

    def anon_kb():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:"))

    pinned = pin_mmap_threshold() if sys.argv[1] == "pin" else None
    big = np.ones(8 << 17)  # 8 MB, mapped on its own; freeing it raises glibc's threshold to 8 MB unless pinned
    del big
    before = anon_kb()
    small = []
    for _ in range(20):
        frame = np.ones(4 << 17)  # 4 MB, a frame-sized buffer
        small.append(np.ones(64))  # something allocated after it, as the loop does
        del frame
    print(pinned, anon_kb() - before)
""")


def _retained_kb(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True).stdout
    pinned, retained = out.split()
    return pinned, int(retained)


def test_pinned_threshold_returns_freed_frame_buffers():
    pinned, retained = _retained_kb("pin")
    assert pinned == "True"
    assert retained < 1024, f"{retained} KB kept after freeing 4 MB buffers with the threshold pinned"


def test_unpinned_glibc_keeps_freed_frame_buffers():
    """What the pin fixes, shown on this machine (so the test above can tell the difference)."""
    pinned, retained = _retained_kb("default")
    assert pinned == "None"
    assert retained >= 3 * 1024, f"only {retained} KB kept: glibc no longer raises its threshold, the pin is moot"
