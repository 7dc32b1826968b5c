"""The cached aarch64 userland runs numpy (+ yaml) and an aarch64 TVM Relax VM library under qemu-user."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from arm.userland import ArmPython

pytestmark = [pytest.mark.arm, pytest.mark.slow]

# Built on the x86 side: a tiny Relax module, cross-compiled for aarch64.
BUILD_SCRIPT = textwrap.dedent(
    """
    import sys
    import tvm
    from tvm.script import ir as I, relax as R

    @I.ir_module
    class Module:
        @R.function
        def main(x: R.Tensor((4, 8), "float32"), w: R.Tensor((8, 3), "float32"),
                 b: R.Tensor((3,), "float32")):
            with R.dataflow():
                y = R.matmul(x, w)
                z = R.add(y, b)
                R.output(z)
            return z

    target = tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]})
    executable = tvm.compile(Module, target=target)
    executable.export_library(sys.argv[1], fcompile=tvm.support.cc.cross_compiler("aarch64-linux-gnu-g++"))
    """
)

# Run inside the emulated aarch64 python with TVM_USE_RUNTIME_LIB=1.
RUN_SCRIPT = textwrap.dedent(
    """
    import os, platform, sys, time
    import numpy as np
    import tvm
    import tvm.runtime
    from tvm.runtime.vm import VirtualMachine

    assert platform.machine() == "aarch64", platform.machine()
    assert os.environ["TVM_USE_RUNTIME_LIB"] == "1"
    lib_path, inputs_path, out_path = sys.argv[1:4]
    inputs = np.load(inputs_path)
    lib = tvm.runtime.load_module(lib_path)
    vm = VirtualMachine(lib, tvm.cpu())
    args = [tvm.runtime.tensor(inputs[k], tvm.cpu()) for k in ("x", "w", "b")]
    t0 = time.perf_counter()
    out = vm["main"](*args).numpy()
    ms = (time.perf_counter() - t0) * 1e3
    np.save(out_path, out)
    print("tvm", tvm.__version__, "runtime-only", tvm.base._RUNTIME_ONLY, f"main {ms:.1f} ms")
    """
)


def _check(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


def test_numpy_on_aarch64(arm: ArmPython):
    t0 = time.monotonic()
    out = _check(
        arm.run(["-c", "import platform, sys, numpy, yaml; print(platform.machine(), sys.version_info[:2], numpy.__version__);"
                 "print(float((numpy.arange(6.0).reshape(2, 3) @ numpy.ones(3)).sum()))"])
    )
    print(f"emulated numpy run: {time.monotonic() - t0:.1f} s: {out.strip()}")
    first, second = out.strip().splitlines()
    assert first.startswith("aarch64 (3, 11) 1.26.4"), out
    assert float(second) == 15.0


def test_tvm_runtime_vm_on_aarch64(arm: ArmPython, tmp_path: Path):
    lib = tmp_path / "add_matmul.aarch64.so"
    build = tmp_path / "build.py"
    build.write_text(BUILD_SCRIPT)
    proc = subprocess.run([sys.executable, str(build), str(lib)], capture_output=True, text=True, timeout=600)
    _check(proc)
    with open(lib, "rb") as f:
        header = f.read(20)
    assert header[:4] == b"\x7fELF" and header[4] == 2 and int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64

    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 8), dtype=np.float32)
    w = rng.standard_normal((8, 3), dtype=np.float32)
    b = rng.standard_normal(3, dtype=np.float32)
    np.savez(tmp_path / "inputs.npz", x=x, w=w, b=b)
    script = tmp_path / "run.py"
    script.write_text(RUN_SCRIPT)

    t0 = time.monotonic()
    out = _check(arm.run([str(script), str(lib), str(tmp_path / "inputs.npz"), str(tmp_path / "out.npy")]))
    print(f"emulated TVM run: {time.monotonic() - t0:.1f} s: {out.strip()}")
    assert "runtime-only True" in out
    got = np.load(tmp_path / "out.npy")
    np.testing.assert_allclose(got, x @ w + b, rtol=1e-5, atol=1e-5)
