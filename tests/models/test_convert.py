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
    assert record["files"] == committed["files"]
    assert (tmp_path / name / "SOURCE.json").read_text() == (REPO / "models" / name / "SOURCE.json").read_text()


def test_emscripten_pack_is_unpacked_by_its_index(tmp_path):
    from edgecv.models.convert.convert import emscripten_assets

    (tmp_path / "pack.data").write_bytes(b"hello world!")
    (tmp_path / "loader.js").write_text('x(); loadPackage({"files": [{"filename": "/a/b.txt", "start": 0, "end": 5}, '
                                        '{"filename": "/c.bin", "start": 6, "end": 12}], "remote_package_size": 12});')
    out = tmp_path / "out"
    out.mkdir()
    files = emscripten_assets(tmp_path / "loader.js", tmp_path / "pack.data", out)
    assert files["b.txt"].read_bytes() == b"hello" and files["c.bin"].read_bytes() == b"world!"
