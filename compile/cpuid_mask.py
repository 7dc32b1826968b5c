"""Hiding CPU features from the runtimes ``edgecv bench`` compares with, so they run a smaller ISA level's code.

Benchmarking for an AVX2 box (``--target x86-64-v3``) on an AVX-512 machine, edgecv's artifact runs AVX2 code; ONNX
Runtime's kernels (MLAS) pick AVX-512 from CPUID and have no setting to stop them, and oneDNN's
``ONEDNN_MAX_CPU_ISA`` covers only oneDNN. ``cpuid_mask.c``, preloaded into a backend's process, makes CPUID itself
answer without the features above the level (the CPU's CPUID faulting, Linux ``arch_prctl(ARCH_SET_CPUID)``: Intel
CPUs since Ivy Bridge, flag ``cpuid_fault``), so every runtime in it sees the box's CPU. Where the CPU can't fault on
CPUID, ``why_not`` says so and the report names the runtimes that ran what the host has.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("cpuid_mask.c")

# Linux flag name -> where CPUID reports it: (leaf, subleaf, register, bit)
FEATURE_BITS = {
    "avx2": (7, 0, "ebx", 5),
    "avx512f": (7, 0, "ebx", 16), "avx512dq": (7, 0, "ebx", 17), "avx512ifma": (7, 0, "ebx", 21),
    "avx512pf": (7, 0, "ebx", 26), "avx512er": (7, 0, "ebx", 27), "avx512cd": (7, 0, "ebx", 28),
    "avx512bw": (7, 0, "ebx", 30), "avx512vl": (7, 0, "ebx", 31),
    "avx512vbmi": (7, 0, "ecx", 1), "avx512_vbmi2": (7, 0, "ecx", 6), "avx512_vnni": (7, 0, "ecx", 11),
    "avx512_bitalg": (7, 0, "ecx", 12), "avx512_vpopcntdq": (7, 0, "ecx", 14),
    "avx512_4vnniw": (7, 0, "edx", 2), "avx512_4fmaps": (7, 0, "edx", 3), "avx512_vp2intersect": (7, 0, "edx", 8),
    "amx_bf16": (7, 0, "edx", 22), "avx512_fp16": (7, 0, "edx", 23), "amx_tile": (7, 0, "edx", 24),
    "amx_int8": (7, 0, "edx", 25),
    "avx_vnni": (7, 1, "eax", 4), "avx512_bf16": (7, 1, "eax", 5),
}
_AVX512_AMX = tuple(f for f in FEATURE_BITS if f.startswith(("avx512", "amx")))
# what a box of each level lacks that a newer x86 CPU may have
HIDDEN = {"x86-64-v3": (*_AVX512_AMX, "avx_vnni"), "x86-64-v3-vnni": _AVX512_AMX}


def mask_spec(features) -> str:
    """``EDGECV_CPUID_MASK`` for hiding ``features``: ``LEAF.SUBLEAF.REG=HEXBITS`` per register, comma-separated."""
    bits: dict[tuple[int, int, str], int] = {}
    for name in features:
        leaf, subleaf, reg, bit = FEATURE_BITS[name]
        bits[(leaf, subleaf, reg)] = bits.get((leaf, subleaf, reg), 0) | (1 << bit)
    return ",".join(f"{leaf}.{subleaf}.{reg}={value:x}" for (leaf, subleaf, reg), value in sorted(bits.items()))


def why_not(flags: frozenset[str] | None = None) -> str | None:
    """Why this machine can't hide CPU features from a process, or None if it can."""
    from edgecv.edge.cpu import host_cpu_flags
    from edgecv.edge.elf import host_arch

    if host_arch() != "x86_64":
        return f"CPUID exists on x86 only, this is {host_arch()}"
    if "cpuid_fault" not in (host_cpu_flags() if flags is None else flags):
        return "this CPU (or its hypervisor) offers no CPUID faulting (/proc/cpuinfo flag cpuid_fault)"
    if shutil.which("cc") is None:
        return "no C compiler (cc) to build the CPUID mask with: apt-get install gcc"
    return None


def library() -> Path:
    """The preload library, built once per source under the cache (``~/.cache/edgecv/cpuid-mask-<hash>.so``)."""
    from edgecv.compile.pipeline import cache_root

    source = SOURCE.read_bytes()
    path = cache_root() / f"cpuid-mask-{hashlib.sha256(source).hexdigest()[:12]}.so"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as work:
            built = Path(work) / path.name
            subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", str(built), str(SOURCE), "-ldl"], check=True,
                           capture_output=True)
            built.replace(path)
    return path


def environment(features) -> dict[str, str]:
    """The environment variables under which a new process (and its children) doesn't see ``features``."""
    preload = " ".join(filter(None, [str(library()), os.environ.get("LD_PRELOAD")]))
    return {"LD_PRELOAD": preload, "EDGECV_CPUID_MASK": mask_spec(features)}
