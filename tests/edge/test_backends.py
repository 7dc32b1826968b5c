"""The reference backends run the uncompiled graph kept in the artifact; all of them agree."""
import sys

import numpy as np
import pytest

from conftest import OPENCV_DATA, run_cli
from edgecv.edge.backends import OPENVINO_INSTALL, open_backend
from edgecv.edge.errors import ArtifactError

pytestmark = [pytest.mark.slow, pytest.mark.tvm, pytest.mark.mxnet]


def test_tvm_onnxruntime_openvino_and_mxnet_agree(artifacts):
    folder = artifacts("ssd_512_mobilenet1.0_voc", size=128, reference=True)
    models = {name: open_backend(name, folder, threads=2) for name in ("tvm", "onnxruntime", "openvino", "mxnet")}
    x = np.random.default_rng(0).standard_normal(models["tvm"].manifest.input.shape).astype(np.float32)
    out = {name: m(x) for name, m in models.items()}
    for name, against in (("onnxruntime", "tvm"), ("mxnet", "tvm"), ("openvino", "tvm"), ("openvino", "onnxruntime")):
        assert list(out[name]) == list(out[against]) == ["boxes", "scores"]
        for key, want in out[against].items():
            assert out[name][key].dtype == np.float32 and out[name][key].shape == want.shape
            np.testing.assert_allclose(out[name][key], want, rtol=1e-3, atol=1e-3 * float(np.abs(want).max()),
                                       err_msg=f"{name} vs {against}: {key}")


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "openvino-int8"])
def test_reference_backend_without_reference_files_says_how(artifacts, backend):
    with pytest.raises(ArtifactError, match="--keep-reference"):
        open_backend(backend, artifacts("ssd_512_mobilenet1.0_voc", size=128))


def test_openvino_int8_without_its_model_says_how(artifacts):
    with pytest.raises(ArtifactError, match=r"no OpenVINO int8 model .*edgecv bench MODEL --backends openvino-int8"):
        open_backend("openvino-int8", artifacts("ssd_512_mobilenet1.0_voc", size=128, reference=True))


def test_missing_openvino_is_one_line_naming_the_fix(artifacts, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # what `import openvino` does where it is not installed
    with pytest.raises(ArtifactError, match=r"^OpenVINO is not installed: pip install 'edgecv\[bench\]'"):
        open_backend("openvino", artifacts("ssd_512_mobilenet1.0_voc", size=128, reference=True))


def test_edgecv_run_with_openvino(artifacts, tmp_path):
    """`edgecv run --backend openvino` runs the loop on the kept ONNX graph; where OpenVINO is missing (a package
    that fails to import, first on the path) it stops with one line naming the fix."""
    folder = artifacts("ssd_512_mobilenet1.0_voc", size=128, reference=True)
    args = ("run", "--artifact", folder, "--source", OPENCV_DATA / "vtest.avi", "--max-frames", "3",
            "--backend", "openvino")
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert '"frames": 3' in result.stdout.strip().splitlines()[-1]
    (tmp_path / "openvino").mkdir()
    (tmp_path / "openvino" / "__init__.py").write_text("raise ImportError(\"No module named 'openvino'\", name='openvino')\n")
    missing = run_cli(*args, env={"PYTHONPATH": str(tmp_path)})
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [f"edgecv run: error: OpenVINO is not installed: {OPENVINO_INSTALL}"]
