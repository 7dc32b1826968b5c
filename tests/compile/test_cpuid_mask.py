"""compile/cpuid_mask: a process started with its environment doesn't see the hidden CPU features (numpy's own CPU
dispatch asked), whatever SIGSEGV handlers its libraries install; other faults still reach the program's handler
(Python's faulthandler) and stay fatal; a CPU that can't fault on CPUID is named as the reason."""
from __future__ import annotations

import os
import subprocess
import sys

from edgecv.compile import cpuid_mask
from edgecv.edge.cpu import host_cpu_flags

# TVM's FFI installs its own SIGSEGV handler with signal(), and OpenCV's OpenSSL runs CPUID when it loads: the edge
# process's imports, before numpy's own CPU dispatch is asked what it sees
NUMPY_SEES = ("import tvm_ffi, cv2, numpy as np; f = np.core._multiarray_umath.__cpu_features__; "
              "print(' '.join(k for k in ('AVX2', 'FMA3', 'AVX512F') if f.get(k)))")


def _python(code: str, env: dict, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *options, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def test_mask_spec_groups_bits_per_register():
    assert cpuid_mask.mask_spec(["avx2", "avx512f", "avx512bw", "avx_vnni"]) == "7.0.ebx=40010020,7.1.eax=10"
    assert all(f.startswith(("avx512", "amx")) for f in cpuid_mask.HIDDEN["x86-64-v3-vnni"])


def test_a_masked_process_doesnt_see_the_hidden_features():
    why = cpuid_mask.why_not()
    if why is not None:  # this CPU can't: the reason names what is missing
        assert "cpuid_fault" not in host_cpu_flags() and "CPUID faulting" in why
        return
    # AVX2 is what every CPU edgecv builds on has, so hiding it shows the mask works on any of them
    assert "AVX2" in _python(NUMPY_SEES, {}).stdout.split()
    env = cpuid_mask.environment(["avx2", "avx512f"])
    seen = _python(NUMPY_SEES, env)
    assert seen.returncode == 0, seen.stderr[-1000:]
    assert "AVX2" not in seen.stdout.split() and "AVX512F" not in seen.stdout.split() and "FMA3" in seen.stdout
    # a real fault: faulthandler (which replaces SIGSEGV's handler after the mask is in place) still reports it, and
    # the process still dies of it
    crash = _python(NUMPY_SEES.replace("tvm_ffi, cv2, ", "") + "; import ctypes; ctypes.string_at(0)", env,
                    "-X", "faulthandler")
    assert crash.returncode == -11 and "Fatal Python error: Segmentation fault" in crash.stderr
    assert "AVX2" not in crash.stdout.split()
