"""Fixtures for the shipped real models: their compiled artifacts (the compile step's cache makes repeats quick)
and the conversion tools' venv (built once, cached under ~/.cache/edgecv/tools)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO, run_cli


@pytest.fixture(scope="session")
def real_artifacts(tmp_path_factory):
    """``real_artifacts(model)`` -> an x86_64 artifact folder with the reference graphs kept, built by the CLI."""
    root = tmp_path_factory.mktemp("real")
    built: dict[str, Path] = {}

    def get(model: str) -> Path:
        if model not in built:
            out = root / model
            result = run_cli("compile", model, "--target", "x86_64", "--out", out, "--keep-reference", "--quiet")
            assert result.returncode == 0, result.stderr[-3000:]
            built[model] = out
        return built[model]

    return get


@pytest.fixture(scope="session")
def few_labels(tmp_path_factory) -> Path:
    """A few images of the labelled set (untuned TVM takes ~1-3 s a frame): vtest frames and photos."""
    data = json.loads((REPO / "models/eval/labels.json").read_text())
    keep = {"opencv-doc:vtest.avi#0", "opencv-doc:vtest.avi#120", "opencv-doc:vtest.avi#510",
            "opencv-doc:basketball1.png", "opencv-doc:left.jpg", "eval:person.jpg"}
    data["images"] = [i for i in data["images"] if i["image"] in keep]
    assert len(data["images"]) == len(keep)
    path = tmp_path_factory.mktemp("labels") / "labels.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="session")
def tool_venv():
    """The conversion tools' venv (TensorFlow 2.15 + tf2onnx), built from models/convert/requirements-tools.txt."""
    from edgecv.models.convert.convert import tool_python

    return tool_python(log=lambda m: None)
