"""The box install, as a box gets it: a fresh venv with only the box lock's wheels, the edgecv wheel and the TVM
runtime wheel (no index), then ``edgecv run`` on a compiled artifact and vtest.avi: the same counts as the build
machine's environment gives, with no MXNet, no TVM compiler and no ``tvm`` Python package installed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pytest

from edgecv import boxwheels

pytestmark = [pytest.mark.slow, pytest.mark.tvm]

PROBE = """
import importlib.util as u, json, pathlib, site
sp = pathlib.Path(site.getsitepackages()[0])
from edgecv.edge.runtime import tvm_runtime
tvm_runtime()
maps = open("/proc/self/maps").read()
print(json.dumps({
    "missing": [m for m in ("mxnet", "gluoncv", "onnxruntime", "ml_dtypes", "tvm.relax", "tvm.runtime")
                if u.find_spec(m) is None],
    "compiler_files": [str(p) for p in sp.rglob("libtvm_compiler*")],
    "runtime_loaded": str(sp / "tvm/lib/libtvm_runtime.so") in maps,
}))
"""


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    """A venv with the box install of edgecv[edge]: the lock's wheels, the two box wheels, no index."""
    root = tmp_path_factory.mktemp("box")
    wheels = boxwheels.box_wheels(root / "wheels")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    result = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-index", "--disable-pip-version-check",
                             "--find-links", str(root / "wheels"), "--find-links", str(boxwheels.wheelhouse()),
                             "-c", str(boxwheels.BOX_LOCK), f"{wheels[0]}[edge]"],
                            capture_output=True, text=True, timeout=900,
                            env={**os.environ, "PIP_CONFIG_FILE": os.devnull})   # only what is given here
    assert result.returncode == 0, result.stderr[-3000:]
    return venv


def _run(edgecv, artifact, video, tmp_path, *extra):
    config = tmp_path / "run.yaml"
    config.write_text("detect:\n  score_threshold: 0.05\ncounting:\n  window: 1\n")
    return subprocess.run([str(edgecv), "run", "--artifact", str(artifact), "--source", str(video), "--config",
                           str(config), "--max-frames", "6", *extra], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)


def test_runtime_wheel_holds_the_runtime_library_alone():
    wheel = boxwheels.runtime_wheel()
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        library = z.read(boxwheels.LIBRARY)
    assert [n for n in names if not n.startswith("edgecv_tvm_runtime-")] == [boxwheels.LIBRARY]
    assert any(n.endswith("/licenses/LICENSE") for n in names)
    with zipfile.ZipFile(boxwheels.tvm_wheel("x86_64", boxwheels.tvm_version())) as z:
        assert library == z.read(boxwheels.LIBRARY)                 # the apache-tvm wheel's bytes
    assert boxwheels.runtime_wheel() == wheel                        # built once, then from the cache


def test_box_install_runs_an_artifact_without_mxnet_or_the_compiler(box, detector_artifact, opencv_data, tmp_path):
    probe = subprocess.run([str(box / "bin" / "python"), "-c", PROBE], capture_output=True, text=True, timeout=300,
                           cwd=tmp_path)                            # not the checkout's edgecv/ beside it
    assert probe.returncode == 0, probe.stderr[-3000:]
    found = json.loads(probe.stdout)
    assert found["missing"] == ["mxnet", "gluoncv", "onnxruntime", "ml_dtypes", "tvm.relax", "tvm.runtime"]
    assert found["compiler_files"] == [] and found["runtime_loaded"]

    video = opencv_data / "vtest.avi"
    on_box = _run(box / "bin" / "edgecv", detector_artifact, video, tmp_path)
    assert on_box.returncode == 0, on_box.stderr[-3000:]
    here = _run(os.path.join(os.path.dirname(sys.executable), "edgecv"), detector_artifact, video, tmp_path)
    assert here.returncode == 0, here.stderr[-3000:]
    summary, reference = (json.loads(r.stdout.strip().splitlines()[-1]) for r in (on_box, here))
    assert summary["frames"] == 6 and summary["errors"] == 0
    assert reference["counts"]["people"] + reference["counts"]["goods"] > 0
    assert summary["counts"] == reference["counts"]                 # the box counts what the build machine counts


def test_http_without_the_web_extra_is_one_line(box, detector_artifact, opencv_data, tmp_path):
    result = _run(box / "bin" / "edgecv", detector_artifact, opencv_data / "vtest.avi", tmp_path,
                  "--http", "127.0.0.1:0")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "needs aiohttp" in result.stderr and "edgecv[web]" in result.stderr
