"""The edge loader refuses artifacts whose checksums, architecture or schema don't match."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edgecv.edge.artifact import load_manifest
from edgecv.edge.errors import ArtifactError
from edgecv.edge.runtime import TvmModel

pytestmark = [pytest.mark.tvm, pytest.mark.slow]


@pytest.fixture
def classifier(artifacts, tmp_path):
    folder = tmp_path / "cls"
    shutil.copytree(artifacts("mobilenetv2_1.0"), folder)
    return folder


def test_good_artifact_loads_and_runs(classifier):
    model = TvmModel(classifier)
    p = model(np.zeros(model.manifest.input.shape, np.float32))["probabilities"]
    assert p.shape == (1, 1000) and abs(float(p.sum()) - 1) < 1e-4


def test_each_call_sees_its_own_input(detector_artifact):
    """The input tensor is reused between calls: every call's outputs must still be those of its own input."""
    model, fresh = TvmModel(detector_artifact), TvmModel(detector_artifact)
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal(model.manifest.input.shape).astype(np.float32) for _ in range(2))
    first, second, again = model(a), model(b), model(a)
    for name, want in fresh(b).items():
        np.testing.assert_array_equal(second[name], want)
        np.testing.assert_array_equal(again[name], first[name])
        assert not np.array_equal(first[name], want)


def _edit_manifest(folder, change):
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


CASES = {
    "tampered library": (lambda f: open(f / "model.so", "ab").write(b"\0"), "checksum mismatch"),
    "missing library": (lambda f: (f / "model.so").unlink(), "artifact file missing"),
    "no manifest": (lambda f: (f / "manifest.json").unlink(), "no manifest.json"),
    "future schema": (lambda f: _edit_manifest(f, lambda d: d.update(schema="edgecv.artifact/9")), "schema"),
    "unknown key": (lambda f: _edit_manifest(f, lambda d: d.update(colour="red")), "colour"),
    "file outside": (lambda f: _edit_manifest(f, lambda d: d["files"].update({"../x": "0"})), "outside"),
    "arch lies": (lambda f: _edit_manifest(f, lambda d: d["target"].update(arch="aarch64")),
                  "built for x86_64 but its manifest says aarch64"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_artifact_refused_with_clear_error(classifier, case):
    damage, message = CASES[case]
    damage(classifier)
    with pytest.raises(ArtifactError, match=message):
        TvmModel(classifier)


def test_artifact_for_another_cpu_is_refused(artifacts):
    arm = artifacts("mobilenetv2_1.0", target="aarch64")
    with pytest.raises(ArtifactError, match="built for aarch64 .* but this machine is x86_64.*--target x86_64"):
        load_manifest(arm)
    assert load_manifest(arm, arch="aarch64").target.name == "aarch64"


def test_infer_cli_reports_bad_artifact_in_one_line(classifier):
    from conftest import run_cli

    (classifier / "model.so").write_bytes(b"not a library")
    result = run_cli("infer", "--artifact", classifier)
    assert result.returncode == 2 and "checksum mismatch" in result.stderr and "Traceback" not in result.stderr


def test_artifact_using_cpu_features_this_cpu_lacks_is_refused_before_loading(classifier):
    """A library compiled for a newer CPU would die of SIGILL at its first such instruction: the manifest lists the
    features its code uses and the loader refuses it, naming them and the portable target."""
    from conftest import run_cli
    from edgecv.edge.artifact import check_cpu_features
    from edgecv.edge.cpu import host_cpu_flags

    manifest = load_manifest(classifier)
    assert manifest.target.cpu_features and set(manifest.target.cpu_features) <= host_cpu_flags()  # built here
    check_cpu_features(manifest, frozenset(manifest.target.cpu_features))
    with pytest.raises(ArtifactError, match=r"uses avx2, fma, which this CPU lacks.*--target x86-64-v3"):
        check_cpu_features(manifest, frozenset(manifest.target.cpu_features) - {"avx2", "fma"})
    _edit_manifest(classifier, lambda d: d["target"].update(cpu_features=["avx2", "sse9_fictional"]))
    result = run_cli("infer", "--artifact", classifier)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "uses sse9_fictional, which this CPU lacks" in lines[0] and "Traceback" not in lines[0]
