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
    vnni: bool = False             # AVX-512 VNNI: int8 convolutions (compile --int8) run on it

    def tvm_target(self) -> dict:
        """The TVM target dict; ``x86_64`` asks LLVM for this host's CPU name."""
        spec = {"kind": "llvm", **self.tvm}
        if self.name == "x86_64":
            import tvm.target.codegen

            spec["mcpu"] = tvm.target.codegen.llvm_get_system_cpu()
        if self.arch == "x86_64":
            spec.setdefault("num-cores", os.cpu_count() or 1)
        return spec

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
    TargetPreset("skylake-avx512", "x86-64 with AVX-512 (Intel Skylake-SP and later, AMD Zen 4)", "x86_64",
                 {"mcpu": "skylake-avx512"}),
    TargetPreset("cascadelake", "x86-64 with AVX-512 VNNI (Intel Cascade Lake and later, AMD Zen 4 and later)",
                 "x86_64", {"mcpu": "cascadelake"}, vnni=True),
    TargetPreset("aarch64", "generic 64-bit ARM with NEON", tvm={"mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]},
                 **_AARCH64),
    TargetPreset("rk3399", "Rockchip RK3399 (Cortex-A72 + A53; Acer aiSage)", tvm={
        "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72", "mattr": ["+neon"], "num-cores": 2}, **_AARCH64),
    TargetPreset("rasp4b64", "Raspberry Pi 4 Model B, 64-bit OS (Cortex-A72)", tvm={
        "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72", "mattr": ["+neon"], "num-cores": 4}, **_AARCH64),
    TargetPreset("armv7", "32-bit ARMv7 with NEON, hard float (Raspberry Pi 3 Model B, 32-bit OS)", tvm={
        "mtriple": "armv7l-linux-gnueabihf", "mcpu": "cortex-a53", "mattr": ["+neon", "+vfp4"],
        "mfloat-abi": "hard", "num-cores": 4}, **_ARMV7),
)}


def resolve_target(name: str) -> TargetPreset:
    if name not in TARGETS:
        raise TargetError(f"unknown target {name!r}", f"use one of {', '.join(TARGETS)} (see `edgecv targets`)")
    return TARGETS[name]
