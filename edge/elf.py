"""Read the CPU a shared library was built for from its ELF header (no tools needed on the box)."""
from __future__ import annotations

import platform
import struct
from dataclasses import dataclass
from pathlib import Path

# e_machine values (ELF spec) -> the architecture names edgecv uses.
_MACHINES = {62: "x86_64", 183: "aarch64", 40: "armv7l", 3: "i386"}
EF_ARM_ABI_FLOAT_HARD = 0x400


@dataclass(frozen=True)
class ElfInfo:
    arch: str
    bits: int
    little_endian: bool
    flags: int

    @property
    def arm_eabi_version(self) -> int:
        return (self.flags >> 24) & 0xFF

    @property
    def arm_hard_float(self) -> bool:
        return bool(self.flags & EF_ARM_ABI_FLOAT_HARD)


def read_elf(path: Path) -> ElfInfo:
    """Parse the ELF header of ``path``; ``ValueError`` if it isn't an ELF shared object."""
    with open(path, "rb") as f:
        head = f.read(64)
    if len(head) < 52 or head[:4] != b"\x7fELF":
        raise ValueError(f"{path} is not an ELF file")
    bits = {1: 32, 2: 64}.get(head[4])
    if bits is None:
        raise ValueError(f"{path} has an unknown ELF class {head[4]}")
    little = head[5] == 1
    order = "<" if little else ">"
    (machine,) = struct.unpack_from(order + "H", head, 18)
    (flags,) = struct.unpack_from(order + "I", head, 48 if bits == 64 else 36)
    return ElfInfo(arch=_MACHINES.get(machine, f"e_machine={machine}"), bits=bits, little_endian=little,
                   flags=flags)


def host_arch() -> str:
    """This machine's architecture in edgecv's names (32-bit ARM userlands report armv7l/armv8l)."""
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64", "armv8l": "armv7l", "armhf": "armv7l"}.get(machine, machine)
