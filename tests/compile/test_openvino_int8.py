"""OpenVINO's own int8 (NNCF post-training quantization of the kept ONNX graph): a real quantization, cached by
what it depends on, and refused by the backend when it does not belong to the artifact."""
import json
import shutil
import sys

import numpy as np
import pytest

from edgecv.compile.openvino_int8 import write_openvino_int8
from edgecv.edge.artifact import read_manifest
from edgecv.edge.backends import OPENVINO_INT8, open_backend
from edgecv.edge.errors import ArtifactError, EdgecvError

pytestmark = [pytest.mark.slow, pytest.mark.tvm, pytest.mark.mxnet]


@pytest.fixture
def folder(artifacts, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECV_CACHE", str(tmp_path / "cache"))  # a cache of this test's own
    out = tmp_path / "art"
    shutil.copytree(artifacts("ssd_512_mobilenet1.0_voc", size=128, reference=True), out)
    return out


def test_quantized_once_per_inputs_then_from_the_cache(folder, tmp_path, opencv_data):
    import openvino as ov

    logs = []
    meta = write_openvino_int8(folder, log=logs.append)
    assert len(logs) == 1 and "quantizing reference.onnx with NNCF" in logs[0]
    assert meta["onnx_sha256"] == read_manifest(folder).files["reference.onnx"]
    assert meta["calibration_frames"] == 32 and meta["calibration"].endswith("vtest.avi")
    model = ov.Core().read_model(str(folder / f"{OPENVINO_INT8}.xml"))
    ops = [op.get_type_name() for op in model.get_ops()]
    assert ops.count("FakeQuantize") >= 20, "NNCF put quantize/dequantize on the convolutions"
    assert ops.count("Convolution") + ops.count("GroupConvolution") > 20
    xml = (folder / f"{OPENVINO_INT8}.xml").read_bytes()

    (folder / f"{OPENVINO_INT8}.xml").unlink()
    logs.clear()
    assert write_openvino_int8(folder, log=logs.append) == meta and logs == []  # the same inputs: the cache
    assert (folder / f"{OPENVINO_INT8}.xml").read_bytes() == xml

    other = write_openvino_int8(folder, calibration=str(opencv_data / "left0*.jpg"), log=logs.append)
    assert len(logs) == 1 and other["calibration_sha256"] != meta["calibration_sha256"]  # other frames: again
    assert len(list((tmp_path / "cache" / "openvino-int8").iterdir())) == 2


def test_backend_runs_the_int8_model_and_refuses_one_made_from_another_graph(folder):
    write_openvino_int8(folder, log=lambda m: None)
    int8, ref = (open_backend(name, folder, threads=2) for name in ("openvino-int8", "onnxruntime"))
    x = np.random.default_rng(0).standard_normal(ref.manifest.input.shape).astype(np.float32)
    got, want = int8(x), ref(x)
    assert {k: (v.shape, v.dtype) for k, v in got.items()} == {k: (v.shape, v.dtype) for k, v in want.items()}
    assert all(np.isfinite(v).all() for v in got.values())
    assert not np.array_equal(got["scores"], want["scores"]), "int8 arithmetic, not the float32 graph"
    assert np.array_equal(int8(x)["scores"], got["scores"])  # deterministic

    meta_path = folder / f"{OPENVINO_INT8}.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "onnx_sha256": "0" * 64}))
    with pytest.raises(ArtifactError, match="quantized from another ONNX graph"):
        open_backend("openvino-int8", folder)
    meta_path.write_text(json.dumps(meta))
    with open(folder / f"{OPENVINO_INT8}.bin", "r+b") as f:
        f.write(b"\x7f")
    with pytest.raises(ArtifactError, match=f"checksum mismatch for {OPENVINO_INT8}.bin"):
        open_backend("openvino-int8", folder)


def test_missing_nncf_is_one_line_naming_the_fix(folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "nncf", None)
    with pytest.raises(EdgecvError, match=r"^nncf is not installed .*: pip install 'edgecv\[bench\]'"):
        write_openvino_int8(folder)
