"""What the CPU can run: its feature flags as Linux names them, and the features a compiled library needs.

A library compiled for one CPU can use instructions another lacks (AVX-512 on an AVX2 box, the dot product on a
Cortex-A72): loaded there it dies of SIGILL at the first such instruction, with no message. The manifest lists
the features the library was compiled to use (``TargetSpec.cpu_features``, in Linux's names) and the loader
refuses an artifact whose features this CPU lacks, before loading its code.

Flags are read as the kernel reports them: ``/proc/cpuinfo`` on x86 (what the hypervisor exposes), the ELF
auxiliary vector on ARM (``getauxval(AT_HWCAP)``, which an emulator such as qemu-user reports for the CPU it
emulates, where ``/proc/cpuinfo`` would show the host's).
"""
from __future__ import annotations

import ctypes
import functools
import platform

# LLVM's feature name -> the flag Linux shows for it, per architecture: the features edgecv's kernels use.
LINUX_FLAGS = {
    "x86_64": {"avx": "avx", "avx2": "avx2", "fma": "fma", "f16c": "f16c", "bmi2": "bmi2", "avx512f": "avx512f",
               "avx512bw": "avx512bw", "avx512dq": "avx512dq", "avx512cd": "avx512cd", "avx512vl": "avx512vl",
               "avx512vnni": "avx512_vnni", "avxvnni": "avx_vnni", "avx512bf16": "avx512_bf16",
               "avx512fp16": "avx512_fp16", "amx-int8": "amx_int8"},
    "aarch64": {"neon": "asimd", "dotprod": "asimddp", "fullfp16": "asimdhp", "i8mm": "i8mm", "sve": "sve",
                "bf16": "bf16"},
}

# getauxval bits on aarch64 (Linux arch/arm64/include/uapi/asm/hwcap.h): AT_HWCAP, then AT_HWCAP2
_AT_HWCAP, _AT_HWCAP2 = 16, 26
_AARCH64_HWCAP = {"fp": 0, "asimd": 1, "aes": 3, "crc32": 7, "atomics": 8, "fphp": 9, "asimdhp": 10,
                  "asimddp": 20, "sve": 22}
_AARCH64_HWCAP2 = {"i8mm": 13, "bf16": 14}


@functools.cache
def host_cpu_flags() -> frozenset[str]:
    """This CPU's feature flags in Linux's names (``avx2``, ``avx512_vnni``, ``asimddp`` ...)."""
    machine = platform.machine()
    if machine in ("aarch64", "arm64"):
        return _auxv_flags()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def _auxv_flags() -> frozenset[str]:
    try:
        getauxval = ctypes.CDLL(None).getauxval
    except (OSError, AttributeError):
        return frozenset()
    getauxval.restype, getauxval.argtypes = ctypes.c_ulong, [ctypes.c_ulong]
    hwcap, hwcap2 = getauxval(_AT_HWCAP), getauxval(_AT_HWCAP2)
    return frozenset([name for name, bit in _AARCH64_HWCAP.items() if hwcap >> bit & 1]
                     + [name for name, bit in _AARCH64_HWCAP2.items() if hwcap2 >> bit & 1])


def missing_features(needed, flags: frozenset[str] | None = None) -> list[str]:
    """The features of ``needed`` (Linux names) this CPU lacks, sorted."""
    flags = host_cpu_flags() if flags is None else flags
    return sorted(set(needed) - flags)


def isa_summary(flags: frozenset[str] | None = None) -> list[str]:
    """The vector and dot-product features worth recording beside a measurement (x86 and ARM names)."""
    flags = host_cpu_flags() if flags is None else flags
    known = {name for table in LINUX_FLAGS.values() for name in table.values()}
    return sorted(flags & known)
