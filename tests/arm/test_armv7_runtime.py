"""armv7 artifacts really run: edgecv builds the TVM runtime for armhf itself (PyPI has no armv7 wheels),
cross-compiles its Python-free runner against it, and runs an armv7 Relax VM library under
``qemu-arm-static``; the outputs match the x86 artifact's run by the Python VM.

Builds (cached under ~/.cache/edgecv/armv7/): ``compile/armv7/build_runtime.sh`` (libtvm_ffi.so and
libtvm_runtime.so for arm-linux-gnueabihf, ~2.5 min the first time) and
``compile/armv7/build_runner.sh`` (run_artifact, seconds).
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.arm, pytest.mark.slow, pytest.mark.tvm]

REPO = Path(__file__).resolve().parents[2]
ARMV7 = REPO / "compile" / "armv7"
SYSROOT = "/usr/arm-linux-gnueabihf"
CACHE = Path(os.environ.get("EDGECV_ARMV7_CACHE", Path.home() / ".cache" / "edgecv" / "armv7"))
ARMV7_TARGET = {"kind": "llvm", "mtriple": "armv7l-linux-gnueabihf", "mattr": ["+neon", "+vfp4"],
                "mfloat-abi": "hard"}
H = W = 20


def _require(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:  # CI installs everything it needs: a missing piece is a failure, not a skip
        pytest.fail(f"{tool} not found: install Debian package {package}")
    return path


def _run(cmd, timeout=600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)


# ---- ELF header -----------------------------------------------------------------------------------
EM_ARM = 40
EF_ARM_EABIMASK = 0xFF000000
EF_ARM_ABI_FLOAT_HARD = 0x00000400


def elf_header(path: Path) -> dict:
    """The few ELF header fields that tell a 32-bit hard-float ARM EABI5 file from anything else."""
    data = Path(path).read_bytes()[:64]
    assert data[:4] == b"\x7fELF", f"{path} is not an ELF file"
    bits = {1: 32, 2: 64}[data[4]]  # EI_CLASS
    endian = {1: "<", 2: ">"}[data[5]]  # EI_DATA
    e_type, e_machine, _version = struct.unpack_from(endian + "HHI", data, 16)
    # e_flags follows e_entry, e_phoff, e_shoff (3 addresses of the class's width)
    flags_at = 24 + 3 * (4 if bits == 32 else 8)
    (e_flags,) = struct.unpack_from(endian + "I", data, flags_at)
    return {"bits": bits, "little_endian": endian == "<", "type": e_type, "machine": e_machine,
            "flags": e_flags, "eabi": (e_flags & EF_ARM_EABIMASK) >> 24,
            "hard_float": bool(e_flags & EF_ARM_ABI_FLOAT_HARD)}


def assert_armhf(path: Path) -> None:
    h = elf_header(path)
    assert (h["bits"], h["little_endian"], h["machine"]) == (32, True, EM_ARM), (path, h)
    assert h["eabi"] == 5 and h["hard_float"], (path, hex(h["flags"]))


# ---- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def armv7_tools() -> dict:
    return {"qemu": _require("qemu-arm-static", "qemu-user-static"),
            "cxx": _require("arm-linux-gnueabihf-g++", "g++-arm-linux-gnueabihf")}


@pytest.fixture(scope="session")
def armv7_runtime(armv7_tools) -> Path:
    """libtvm_ffi.so + libtvm_runtime.so for armhf (build_runtime.sh's own content-hashed cache)."""
    out = Path(_run(["bash", ARMV7 / "build_runtime.sh", "--print-dir"]).stdout.strip())
    proc = _run(["bash", ARMV7 / "build_runtime.sh"], timeout=3600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "libtvm_runtime.so").is_file() and (out / "libtvm_ffi.so").is_file(), proc.stdout
    return out


@pytest.fixture(scope="session")
def armv7_runner(armv7_runtime) -> Path:
    out = CACHE / f"runner-armv7-{armv7_runtime.name.removeprefix('runtime-')}"
    proc = _run(["bash", ARMV7 / "build_runner.sh", out, armv7_runtime, "--arch", "armv7"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out / "run_artifact"


def tiny_onnx_model():
    """conv 3x3 (+bias) -> relu -> (feature map, softmax(global-avg-pool)) : two outputs."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    w = (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32)
    b = (rng.standard_normal(8) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((4, 8, 1, 1)) * 0.3).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Conv", ["r", "w2"], ["feat"], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["r"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Softmax", ["flat"], ["prob"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "edgecv_tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, H, W])],
        [helper.make_tensor_value_info("feat", TensorProto.FLOAT, [1, 4, H // 2, W // 2]),
         helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 8])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"), numpy_helper.from_array(w2, "w2")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory, armv7_tools) -> dict:
    """The same Relax module compiled for x86-64, armv7 (cross-linked with the armhf g++) and aarch64;
    plus an armv7 variant whose weights are `main` parameters, stored as a TVM param dict."""
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    root = tmp_path_factory.mktemp("armv7-runtime")
    mod = from_onnx(tiny_onnx_model(), keep_params_in_input=False)  # weights -> VM constants
    x86 = root / "tiny-x86_64.so"
    tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"})).export_library(str(x86))
    armv7 = root / "tiny-armv7.so"
    tvm.compile(mod, target=tvm.target.Target(ARMV7_TARGET)).export_library(
        str(armv7), fcompile=tvm.support.cc.cross_compiler("arm-linux-gnueabihf-g++"))

    # weights as parameters of main, after the input; the runner passes them in sorted-name order
    with_params, params = relax.frontend.detach_params(from_onnx(tiny_onnx_model(), keep_params_in_input=True))
    armv7_params = root / "tiny-armv7-params.so"
    tvm.compile(with_params, target=tvm.target.Target(ARMV7_TARGET)).export_library(
        str(armv7_params), fcompile=tvm.support.cc.cross_compiler("arm-linux-gnueabihf-g++"))
    params_bin = root / "tiny-params.bin"
    tvm.runtime.save_param_dict_to_file({f"p{i:03d}": t for i, t in enumerate(params["main"])}, str(params_bin))
    return {"root": root, "x86_64": x86, "armv7": armv7, "armv7_params": armv7_params, "params": params_bin,
            "module": mod}


def x86_reference(tiny_artifacts, x: np.ndarray) -> list[np.ndarray]:
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(tvm.runtime.load_module(str(tiny_artifacts["x86_64"])), tvm.cpu())
    result = vm["main"](tvm.runtime.tensor(x))
    return [result.numpy()] if hasattr(result, "numpy") else [t.numpy() for t in result]


def assert_outputs_match(prefix: Path, expected: list[np.ndarray]) -> dict:
    meta = json.loads(prefix.with_suffix(".json").read_text())
    assert [o["shape"] for o in meta["outputs"]] == [list(e.shape) for e in expected]
    assert all(o["dtype"] == "float32" for o in meta["outputs"])
    for i, want in enumerate(expected):
        got = np.fromfile(f"{prefix}.{i}.bin", dtype="<f4").reshape(want.shape)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=f"output {i}")
    return meta


def run_armv7(runner: Path, qemu: str, lib: Path, x: np.ndarray, prefix: Path) -> subprocess.CompletedProcess:
    inp = prefix.with_suffix(".input.bin")
    x.astype("<f4").tofile(inp)
    return _run([qemu, "-L", SYSROOT, runner, lib, inp, prefix, "--shape", ",".join(map(str, x.shape))])


# ---- tests ----------------------------------------------------------------------------------------
def test_runtime_and_runner_are_armhf(armv7_runtime, armv7_runner):
    for path in (armv7_runtime / "libtvm_ffi.so", armv7_runtime / "libtvm_runtime.so", armv7_runner):
        assert_armhf(path)
    info = json.loads((armv7_runtime / "BUILD_INFO.json").read_text())
    assert info["apache_tvm"] == "0.27.0.post1" and info["apache_tvm_ffi"] == "0.1.14.post0"
    assert not any(s.startswith(("rpc/", "extra/")) for s in info["runtime_sources"])  # CPU-only runtime


def test_armv7_artifact_is_elf32_eabi5_hard_float(tiny_artifacts):
    assert_armhf(tiny_artifacts["armv7"])
    h = elf_header(tiny_artifacts["x86_64"])
    assert (h["bits"], h["machine"]) == (64, 62)  # EM_X86_64: the header parser tells them apart
    assert b"__tvm_ffi__library_bin" in tiny_artifacts["armv7"].read_bytes()


def test_armv7_outputs_match_x86(tiny_artifacts, armv7_runner, armv7_tools):
    x = np.random.default_rng(0).standard_normal((1, 3, H, W)).astype(np.float32)
    prefix = tiny_artifacts["root"] / "out"
    proc = run_armv7(armv7_runner, armv7_tools["qemu"], tiny_artifacts["armv7"], x, prefix)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]

    expected = x86_reference(tiny_artifacts, x)
    assert [e.shape for e in expected] == [(1, 4, H // 2, W // 2), (1, 8)]
    assert np.isclose(expected[1].sum(), 1.0, atol=1e-5)  # softmax: the comparison is not vacuous
    assert np.abs(expected[0]).max() > 0.1
    assert_outputs_match(prefix, expected)


def test_armv7_weights_as_params(tiny_artifacts, armv7_runner, armv7_tools):
    """Weights passed to main after the input (--params: a TVM param dict, read by the armhf runtime)."""
    x = np.random.default_rng(2).standard_normal((1, 3, H, W)).astype(np.float32)
    prefix = tiny_artifacts["root"] / "out-params"
    inp = prefix.with_suffix(".input.bin")
    x.tofile(inp)
    cmd = [armv7_tools["qemu"], "-L", SYSROOT, armv7_runner, tiny_artifacts["armv7_params"], inp, prefix,
           "--shape", f"1,3,{H},{W}"]
    missing = _run(cmd)
    assert missing.returncode == 1 and "expects 4 arguments" in missing.stderr, missing.stderr[-2000:]
    proc = _run([*cmd, "--params", tiny_artifacts["params"]])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert assert_outputs_match(prefix, x86_reference(tiny_artifacts, x))["num_params"] == 3


def test_aarch64_runner_with_wheel_runtime(arm, tiny_artifacts, tmp_path):
    """The same runner source builds for aarch64 against the PyPI aarch64 wheels' libraries."""
    import tvm

    qemu = _require("qemu-aarch64-static", "qemu-user-static")
    _require("aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu")
    out = CACHE / f"runner-aarch64-{arm.site.name}"
    proc = _run(["bash", ARMV7 / "build_runner.sh", out, arm.site, "--arch", "aarch64"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lib = tmp_path / "tiny-aarch64.so"
    target = tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]})
    tvm.compile(tiny_artifacts["module"], target=target).export_library(
        str(lib), fcompile=tvm.support.cc.cross_compiler("aarch64-linux-gnu-g++"))
    x = np.random.default_rng(3).standard_normal((1, 3, H, W)).astype(np.float32)
    x.tofile(tmp_path / "x.bin")
    run = _run([qemu, "-L", "/usr/aarch64-linux-gnu", out / "run_artifact", lib, tmp_path / "x.bin", tmp_path / "y",
                "--shape", f"1,3,{H},{W}"])
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert_outputs_match(tmp_path / "y", x86_reference(tiny_artifacts, x))


def test_runner_reports_errors(tiny_artifacts, armv7_runner, armv7_tools):
    qemu, root = armv7_tools["qemu"], tiny_artifacts["root"]
    bad = run_armv7(armv7_runner, qemu, tiny_artifacts["armv7"], np.zeros((1, 3, H, W + 1), np.float32), root / "bad")
    assert bad.returncode != 0 and "run_artifact: error:" in bad.stderr, bad.stderr[-2000:]

    short = root / "short.bin"
    np.zeros(5, np.float32).tofile(short)
    proc = _run([qemu, "-L", SYSROOT, armv7_runner, tiny_artifacts["armv7"], short, root / "short", "--shape", f"1,3,{H},{W}"])
    assert proc.returncode == 1 and "has 20 bytes" in proc.stderr, proc.stderr[-2000:]

    wrong_class = run_armv7(armv7_runner, qemu, tiny_artifacts["x86_64"], np.zeros((1, 3, H, W), np.float32),
                            root / "wrong")
    assert wrong_class.returncode != 0 and "run_artifact: error:" in wrong_class.stderr
    assert "ELF" in wrong_class.stderr or "wrong" in wrong_class.stderr, wrong_class.stderr[-2000:]

    usage = _run([qemu, "-L", SYSROOT, armv7_runner])
    assert usage.returncode == 2 and "usage: run_artifact" in usage.stderr


def test_real_armv7_artifact_matches_x86(artifacts, armv7_runner, armv7_tools, tmp_path):
    """A real compiled artifact (MobileNetV2, the crop classifier) for armv7: its params.npz converted to a TVM
    param dict for the runner, run under qemu-arm, equal to the x86 artifact on the same input."""
    import tvm

    from edgecv.edge.artifact import read_manifest
    from edgecv.edge.runtime import TvmModel

    arm = artifacts("mobilenetv2_1.0", target="armv7")
    manifest = read_manifest(arm)
    with np.load(arm / manifest.params) as stored:
        tvm.runtime.save_param_dict_to_file({k: tvm.runtime.tensor(stored[k]) for k in stored.files},
                                            str(tmp_path / "params.bin"))
    x86 = TvmModel(artifacts("mobilenetv2_1.0"))
    x = np.random.default_rng(3).standard_normal(manifest.input.shape).astype(np.float32)
    inp = tmp_path / "x.bin"
    x.astype("<f4").tofile(inp)
    proc = _run([armv7_tools["qemu"], "-L", SYSROOT, armv7_runner, arm / manifest.library, inp, tmp_path / "out",
                 "--shape", ",".join(map(str, x.shape)), "--params", tmp_path / "params.bin"])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    want = x86(x)["probabilities"]
    got = np.fromfile(tmp_path / "out.0.bin", dtype="<f4").reshape(want.shape)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert abs(float(got.sum()) - 1) < 1e-4
