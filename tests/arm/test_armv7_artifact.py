"""The armv7 (32-bit, hard-float) artifact, checked statically: PyPI has no armv7 TVM runtime to run it
with, so the ELF header is read: 32-bit ARM, EABI5, hard float; the loader refuses it on other CPUs."""
from __future__ import annotations

import pytest

from edgecv.edge.artifact import load_manifest, read_manifest
from edgecv.edge.elf import read_elf
from edgecv.edge.errors import ArtifactError

pytestmark = [pytest.mark.arm, pytest.mark.slow, pytest.mark.tvm]


def test_armv7_artifact_is_32bit_eabi5_hard_float(artifacts):
    folder = artifacts("mobilenetv2_1.0", target="armv7")
    manifest = read_manifest(folder)
    assert manifest.target.arch == "armv7l" and manifest.target.tvm["mtriple"] == "armv7l-linux-gnueabihf"
    elf = read_elf(folder / manifest.library)
    assert (elf.arch, elf.bits, elf.little_endian) == ("armv7l", 32, True)
    assert elf.arm_eabi_version == 5 and elf.arm_hard_float
    with open(folder / manifest.library, "rb") as f:
        assert b"__tvm_ffi__library_bin" in f.read()  # the TVM 0.27 library entry point
    with pytest.raises(ArtifactError, match="built for armv7l .* this machine is x86_64"):
        load_manifest(folder)
    assert load_manifest(folder, arch="armv7l").model == "mobilenetv2_1.0"
