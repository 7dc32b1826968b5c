"""Target presets: the CPUs edgecv compiles for. Adding a board is adding one entry."""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field

from edgecv.edge.errors import TargetError


@dataclass(frozen=True)
class TargetPreset:
    name: str
    description: str
    arch: str                      # x86_64 | aarch64 | armv7l (what the edge loader checks)
    tvm: dict = field(default_factory=dict)
    cross_compiler: str | None = None
    cross_package: str | None = None
    int8: str | None = None        # the int8 kernel (compile/quantize.py INT8_KERNELS) for --int8; None: no int8
                                   # path (x86_64: the best one this machine's CPU runs)

    def tvm_target(self) -> dict:
        """The TVM target dict; ``x86_64`` asks LLVM for this host's CPU name."""
        spec = {"kind": "llvm", **self.tvm}
        if self.name == "x86_64":
            import tvm.target.codegen

            spec["mcpu"] = tvm.target.codegen.llvm_get_system_cpu()
        if self.arch == "x86_64":
            spec.setdefault("num-cores", os.cpu_count() or 1)
        return spec

    def cpu_features(self, spec: dict | None = None) -> tuple[str, ...]:
        """The CPU features (Linux names) code compiled for this target may use: what the box must have."""
        import tvm
        import tvm.target.codegen

        from edgecv.edge.cpu import LINUX_FLAGS

        target = tvm.target.Target(spec or self.tvm_target())
        return tuple(linux for llvm, linux in LINUX_FLAGS.get(self.arch, {}).items()
                     if tvm.target.codegen.target_has_features(llvm, target))

    def why_not_here(self, flags: frozenset[str] | None = None) -> str | None:
        """Why this machine can't run this target's code (another architecture, or CPU features this CPU lacks,
        ``flags`` if given), or None if it can."""
        from edgecv.edge.cpu import missing_features
        from edgecv.edge.elf import host_arch

        if self.arch != host_arch():
            return f"{self.name} code can't run on this {host_arch()} machine"
        missing = [] if self.name == "x86_64" else missing_features(self.cpu_features(), flags)  # x86_64: this CPU
        return f"this CPU lacks {', '.join(missing)}: it can't run {self.name} code" if missing else None

    def fcompile(self):
        """The compiler that links the library: the host's, or Debian's cross g++ (checked)."""
        if self.cross_compiler is None:
            return None
        if shutil.which(self.cross_compiler) is None:
            raise TargetError(f"cross compiler {self.cross_compiler} not found, needed for target {self.name}",
                              f"apt-get install {self.cross_package}")
        import tvm.support.cc

        return tvm.support.cc.cross_compiler(self.cross_compiler)


_AARCH64 = dict(arch="aarch64", cross_compiler="aarch64-linux-gnu-g++", cross_package="g++-aarch64-linux-gnu")
_ARMV7 = dict(arch="armv7l", cross_compiler="arm-linux-gnueabihf-g++", cross_package="g++-arm-linux-gnueabihf")

TARGETS: dict[str, TargetPreset] = {t.name: t for t in (
    TargetPreset("x86_64", "this x86-64 machine's CPU and its features (AVX2/AVX-512 ...)", "x86_64"),
    TargetPreset("x86-64-v3", "any x86-64 with AVX2 and FMA (Intel Haswell and later, Atom/Celeron/Pentium N from "
                 "Gracemont, Core N; AMD Zen 1-5): the portable box target", "x86_64", {"mcpu": "x86-64-v3"},
                 int8="avx2"),
    TargetPreset("x86-64-v3-vnni", "x86-64 with AVX2, FMA and AVX-VNNI (Intel N100/N97/N200, Core i3-N305, Atom "
                 "x7000, Alder Lake and later; AMD Zen 5): x86-64-v3 plus the 256-bit int8 dot product",
                 "x86_64", {"mcpu": "x86-64-v3", "mattr": ["+avxvnni"]}, int8="avx-vnni"),
    TargetPreset("skylake-avx512", "x86-64 with AVX-512 (Intel Skylake-SP and later, AMD Zen 4)", "x86_64",
                 {"mcpu": "skylake-avx512"}, int8="avx512bw"),
    TargetPreset("cascadelake", "x86-64 with AVX-512 VNNI (Intel Cascade Lake and later, AMD Zen 4 and later)",
                 "x86_64", {"mcpu": "cascadelake"}, int8="avx512-vnni"),
    TargetPreset("aarch64", "generic 64-bit ARM with NEON (ARMv8.0: any 64-bit ARM board)",
                 tvm={"mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}, int8="neon", **_AARCH64),
    TargetPreset("cortex-a76", "64-bit ARM with the dot product (ARMv8.2+: Raspberry Pi 5, Rockchip RK3588, "
                 "Cortex-A76/A78/X1)", tvm={"mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a76",
                                            "mattr": ["+neon", "+dotprod"], "num-cores": 4},
                 int8="neon-dotprod", **_AARCH64),
    TargetPreset("rk3399", "Rockchip RK3399 (Cortex-A72 + A53; Acer aiSage)", tvm={
        "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72", "mattr": ["+neon"], "num-cores": 2}, int8="neon",
        **_AARCH64),
    TargetPreset("rasp4b64", "Raspberry Pi 4 Model B, 64-bit OS (Cortex-A72)", tvm={
        "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72", "mattr": ["+neon"], "num-cores": 4}, int8="neon",
        **_AARCH64),
    TargetPreset("armv7", "32-bit ARMv7 with NEON, hard float (Raspberry Pi 3 Model B, 32-bit OS)", tvm={
        "mtriple": "armv7l-linux-gnueabihf", "mcpu": "cortex-a53", "mattr": ["+neon", "+vfp4"],
        "mfloat-abi": "hard", "num-cores": 4}, **_ARMV7),
)}


def resolve_target(name: str) -> TargetPreset:
    if name not in TARGETS:
        raise TargetError(f"unknown target {name!r}", f"use one of {', '.join(TARGETS)} (see `edgecv targets`)")
    return TARGETS[name]
