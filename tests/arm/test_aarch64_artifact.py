"""The aarch64 artifact runs under qemu-user in an ARM userland, through the edge runtime's own loader
(`edgecv infer`), and its outputs match the x86 artifact's on the same input."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from edgecv.edge.runtime import TvmModel

pytestmark = [pytest.mark.arm, pytest.mark.slow, pytest.mark.tvm]


def _edgecv_tree(root: Path) -> Path:
    """An importable ``edgecv`` package for the emulated Python: the same mapping setup.cfg makes."""
    pkg = root / "edgecv"
    shutil.copytree(REPO / "edgecv", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    for name, folder in {"edge": "edge", "models": "models", "greengrass": "greengrass"}.items():  # as the wheel installs
        shutil.copytree(REPO / folder, pkg / name, ignore=shutil.ignore_patterns("__pycache__"))
    return root


@pytest.mark.parametrize("model,size", [("ssd_512_mobilenet1.0_voc", 256), ("mobilenetv2_1.0", None)])
def test_aarch64_artifact_matches_x86(arm, artifacts, tmp_path, model, size):
    arm_dir = artifacts(model, target="aarch64", size=size)
    x86 = TvmModel(artifacts(model, target="x86_64", size=size))
    x = np.random.default_rng(0).standard_normal(x86.manifest.input.shape).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    proc = arm.run(["-m", "edgecv", "infer", "--artifact", str(arm_dir), "--input", str(tmp_path / "x.npy"),
                    "--output", str(tmp_path / "y.npz")], pythonpath=[_edgecv_tree(tmp_path / "py")], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(tmp_path / "y.npz")
    expected = x86(x)
    assert set(got.files) == set(expected)
    for name, want in expected.items():
        np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()), err_msg=name)
