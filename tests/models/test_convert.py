"""The conversion from the npm packages repeats exactly: what it writes is what is committed.

Runs the real tools: npm pack (the npm registry), tf2onnx in its own venv (built here once and cached under
~/.cache/edgecv/tools), MXNet's ONNX importer.
"""
from __future__ import annotations

import json
import sys

import pytest

from conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.mxnet]


@pytest.mark.parametrize("name", ["ssd_300_mobilenetv2_oid", "nanodet_416_coco"])
def test_conversion_reproduces_the_committed_files(name, tool_venv, tmp_path):
    from edgecv.models.convert.convert import MODELS_TO_CONVERT, convert

    record = convert(MODELS_TO_CONVERT[name], tmp_path / name, log=lambda m: print(m, file=sys.stderr))
    committed = json.loads((REPO / "models" / name / "SOURCE.json").read_text())
    assert record["files"].keys() == committed["files"].keys()
    for file, made in record["files"].items():
        if made != committed["files"][file] and file.endswith(".onnx"):
            # tf2onnx orders some equivalent nodes (shape casts) differently from run to run: the bytes may
            # differ while the model is the same computation on the same weights, which is what must repeat
            assert made["bytes"] == committed["files"][file]["bytes"]
            assert_same_computation(tmp_path / name / file, REPO / "models" / name / file)
            record["files"][file] = committed["files"][file]
    assert record == committed


def assert_same_computation(made, committed):
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    a, b = onnx.load(str(made)), onnx.load(str(committed))
    assert sorted(n.op_type for n in a.graph.node) == sorted(n.op_type for n in b.graph.node)
    weights = lambda m: sorted(numpy_helper.to_array(i).tobytes() for i in m.graph.initializer)  # noqa: E731
    assert weights(a) == weights(b)
    shape = [d.dim_value for d in a.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(0).random(shape, np.float32)
    run = lambda path: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(  # noqa: E731
        None, {a.graph.input[0].name: x})
    for out_a, out_b in zip(run(made), run(committed)):
        np.testing.assert_array_equal(out_a, out_b)


def test_emscripten_pack_is_unpacked_by_its_index(tmp_path):
    from edgecv.models.convert.convert import emscripten_assets

    (tmp_path / "pack.data").write_bytes(b"hello world!")
    (tmp_path / "loader.js").write_text('x(); loadPackage({"files": [{"filename": "/a/b.txt", "start": 0, "end": 5}, '
                                        '{"filename": "/c.bin", "start": 6, "end": 12}], "remote_package_size": 12});')
    out = tmp_path / "out"
    out.mkdir()
    files = emscripten_assets(tmp_path / "loader.js", tmp_path / "pack.data", out)
    assert files["b.txt"].read_bytes() == b"hello" and files["c.bin"].read_bytes() == b"world!"
