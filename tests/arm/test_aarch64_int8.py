"""aarch64 int8 and tuned artifacts under qemu-user, on the CPUs the boxes have: the NEON kernel on a Cortex-A72
(Raspberry Pi 4: ARMv8.0, no dot product), the dot-product kernel on a Cortex-A76 (Raspberry Pi 5, RK3588) and
refused on the A72 before its code runs; outputs within 8-bit error of the x86 int8 artifact's. And a float32
artifact with the x86 AVX2 records transferred: the same outputs as x86's."""
from __future__ import annotations

import re

import numpy as np
import pytest

from arm.test_aarch64_artifact import _edgecv_tree
from conftest import run_cli
from edgecv.compile.quantize import INT8_KERNELS
from edgecv.edge.runtime import TvmModel

pytestmark = [pytest.mark.arm, pytest.mark.slow, pytest.mark.tvm]

MODEL = ("ssd_512_mobilenet1.0_voc", "--input-size", "128", "--random-weights", "0")


@pytest.fixture(scope="module")
def int8_builds(tmp_path_factory):
    """The same model in int8 for the x86 host (its best kernel), any AVX2 CPU (x86-64-v3: 7-bit weights), aarch64
    (NEON) and cortex-a76 (dot product)."""
    root = tmp_path_factory.mktemp("int8")
    built = {}
    for target in ("x86_64", "x86-64-v3", "aarch64", "cortex-a76"):
        result = run_cli("compile", *MODEL, "--target", target, "--int8", "--out", root / target)
        assert result.returncode == 0, result.stderr[-3000:]
        built[target] = root / target
    return built


def _infer_arm(arm, artifact, x, tmp_path, cpu: str):
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / f"y-{artifact.name}-{cpu}.npz"
    tree = tmp_path / "py"
    if not tree.exists():
        _edgecv_tree(tree)
    proc = arm.run(["-m", "edgecv", "infer", "--artifact", str(artifact), "--input", str(tmp_path / "x.npy"),
                    "--output", str(out)], pythonpath=[tree], cwd=tmp_path, env={"QEMU_CPU": cpu})
    return proc, (dict(np.load(out)) if proc.returncode == 0 else None)


def _within_8bit_error(got: dict, want: dict, same_weights: bool) -> None:
    """int8 against x86's int8. With the same weight range (VNNI's) both sum the same integers: the outputs agree but
    where a byte's rounding flips at a half step. With AVX2's 7-bit weights they differ as two quantizations do: the
    typical element within a few 8-bit steps, boxes strongly correlated, scores (random weights: near-ties between
    classes, which rounding reorders) clearly so; a wrong zero point, sign or packing leaves no correlation."""
    assert got.keys() == want.keys()
    for name in want:
        assert np.all(np.isfinite(got[name])) and np.abs(want[name]).max() > 0, name
        difference = np.abs(got[name] - want[name]) / np.abs(want[name]).max()
        correlation = np.corrcoef(got[name].ravel(), want[name].ravel())[0, 1]
        if same_weights:
            assert np.median(difference) < 1e-3 and correlation > 0.99, (name, np.median(difference), correlation)
        else:
            assert np.median(difference) < 0.03, (name, np.median(difference))
            assert correlation > (0.9 if name == "boxes" else 0.5), (name, correlation)


def test_neon_int8_runs_on_a_cortex_a72_within_8bit_error_of_x86(arm, int8_builds, tmp_path):
    x86 = {target: TvmModel(int8_builds[target]) for target in ("x86_64", "x86-64-v3")}
    x = np.random.default_rng(0).standard_normal(x86["x86_64"].manifest.input.shape).astype(np.float32)
    proc, got = _infer_arm(arm, int8_builds["aarch64"], x, tmp_path, "cortex-a72")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for target, model in x86.items():
        same = INT8_KERNELS[model.manifest.int8_kernel].weight_max == INT8_KERNELS["neon"].weight_max
        _within_8bit_error(got, model(x), same)


def test_dot_product_int8_is_refused_on_a_cortex_a72_and_equals_neon_on_a_cortex_a76(arm, int8_builds, tmp_path):
    """Both ARM kernels sum the same int8 products exactly in int32: on the A76 the dot-product build gives what the
    NEON build gives. On the A72 it would die of SIGILL: the loader refuses it first, in one line."""
    x = np.random.default_rng(1).standard_normal(TvmModel(int8_builds["x86_64"]).manifest.input.shape) \
        .astype(np.float32)
    refused, _ = _infer_arm(arm, int8_builds["cortex-a76"], x, tmp_path, "cortex-a72")
    assert refused.returncode == 2, refused.stderr[-2000:]
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--target aarch64" in lines[0], lines
    assert re.search(r"compiled for cortex-a76 and uses (\w+, )*asimddp(, \w+)*, which this CPU lacks", lines[0])
    proc, dot = _infer_arm(arm, int8_builds["cortex-a76"], x, tmp_path, "cortex-a76")
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc, neon = _infer_arm(arm, int8_builds["aarch64"], x, tmp_path, "cortex-a76")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, want in neon.items():
        assert np.abs(want).max() > 0, name
        np.testing.assert_allclose(dot[name], want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()), err_msg=name)


def test_cpu_features_are_read_from_the_emulated_cpu(arm, tmp_path):
    """On ARM the features come from the auxiliary vector, which qemu fills for the CPU it emulates (its
    /proc/cpuinfo is the host's)."""
    code = "from edgecv.edge.cpu import host_cpu_flags; print(' '.join(sorted(host_cpu_flags())))"
    seen = {}
    for cpu in ("cortex-a72", "cortex-a76"):
        proc = arm.run(["-c", code], pythonpath=[_edgecv_tree(tmp_path / cpu)], env={"QEMU_CPU": cpu}, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        seen[cpu] = set(proc.stdout.split())
    assert "asimd" in seen["cortex-a72"] and "asimddp" not in seen["cortex-a72"]
    assert {"asimd", "asimddp"} <= seen["cortex-a76"]


def test_float32_with_transferred_avx2_records_matches_x86(arm, artifacts, tmp_path):
    """SSD-512 at its own size has AVX2 records: compiled for aarch64 they are applied (with a warning saying they
    were tuned on x86), and the scheduled ARM library computes what the x86 one does."""
    result = run_cli("compile", "ssd_512_mobilenet1.0_voc", "--random-weights", "0", "--target", "aarch64",
                     "--out", tmp_path / "arm")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "x86-64-v3" in result.stderr + result.stdout and "transferred to aarch64" in result.stderr + result.stdout
    x86 = TvmModel(artifacts("ssd_512_mobilenet1.0_voc"))
    x = np.random.default_rng(2).standard_normal(x86.manifest.input.shape).astype(np.float32)
    proc, got = _infer_arm(arm, tmp_path / "arm", x, tmp_path, "cortex-a72")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, want in x86(x).items():
        np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()), err_msg=name)
