"""The validated records behind the configuration and the manifest (edge/typed.py): conversion, every problem
named with its location in one line, lenient reading of strings, dumps that parse back."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest

from edgecv.edge.artifact import read_manifest
from edgecv.edge.config import DetectConfig, RunConfig, load_config
from edgecv.edge.typed import Invalid, Record, field
from conftest import REPO


class Inner(Record):
    level: int = field(1, ge=0, le=9)
    tags: tuple[str, ...] = ()


class Outer(Record):
    name: str = field(pattern=r"^[a-z]+$")
    ratio: float = field(0.5, gt=0, lt=1)
    mode: Literal[0, 1, "auto"] = "auto"
    inner: Inner = field(default_factory=Inner)
    items: list[Inner] = field(default_factory=list, max_length=2)
    path: Path | None = None
    table: dict[str, int] = field(default_factory=dict)
    kind: str = field("x", alias="type")

    def check(self) -> None:
        if self.name == "bad":
            raise ValueError("name may not be bad")


def test_values_are_converted_to_the_declared_types():
    r = Outer.parse({"name": "a", "ratio": 1 / 4, "mode": 1, "inner": {"level": 3.0, "tags": ["p", "q"]},
                     "items": [{"level": 2}], "path": "/tmp/x", "table": {"k": 2.0}, "type": "y"})
    assert r.inner == Inner(level=3, tags=("p", "q")) and type(r.inner.level) is int
    assert r.items == [Inner(level=2)] and r.path == Path("/tmp/x") and r.table == {"k": 2} and r.kind == "y"
    assert r.given == {"name", "ratio", "mode", "inner", "items", "path", "table", "kind"}
    assert Outer.parse({"name": "a"}).given == {"name"}


def test_every_problem_is_named_with_its_location_in_one_line():
    with pytest.raises(Invalid) as info:
        Outer.parse({"name": "A", "ratio": 1, "mode": True, "inner": {"level": 10, "tags": [1]},
                     "items": [{}, {}, {}], "table": {"k": "2"}, "colour": "red", "kind": "z"})
    text = str(info.value)
    assert "\n" not in text
    for expected in ("name: 'A' does not match", "ratio: must be < 1", "mode: must be one of 0, 1, 'auto', got True",
                     "inner.level: must be <= 9", "inner.tags.0: must be text", "items: must have at most 2 items",
                     "table.k: must be a whole number", "colour: unknown key",
                     "kind: unknown key (did you mean type?)"):
        assert expected in text, text
    with pytest.raises(Invalid, match=r"items\.1\.level: must be >= 0"):
        Outer.parse({"name": "a", "items": [{}, {"level": -1}]})
    with pytest.raises(Invalid, match="^name: required$"):
        Outer.parse({})
    with pytest.raises(Invalid, match=r"^\(top\): name may not be bad$"):
        Outer.parse({"name": "bad"})


def test_records_made_directly_are_checked_too_and_frozen():
    with pytest.raises(Invalid, match="score_threshold: must be <= 1.0, got 2"):
        DetectConfig(score_threshold=2)
    config = DetectConfig(score_threshold=1)
    assert config.score_threshold == 1.0 and type(config.score_threshold) is float
    with pytest.raises(AttributeError):
        config.score_threshold = 0.3
    assert config.replace(nms_iou=0.6).nms_iou == 0.6 and config.nms_iou == 0.45
    with pytest.raises(Invalid, match="nms_iou"):
        config.replace(nms_iou=0)


def test_lenient_reading_turns_strings_into_the_declared_types_only_where_unambiguous():
    r = Outer.parse({"name": "a", "ratio": "0.25", "mode": "1", "inner": '{"level": "4"}', "path": "null",
                     "table": {"k": "7"}}, lax=True)
    assert (r.ratio, r.mode, r.inner.level, r.path, r.table) == (0.25, 1, 4, None, {"k": 7})
    with pytest.raises(Invalid, match="ratio: must be a number"):
        Outer.parse({"name": "a", "ratio": "half"}, lax=True)
    with pytest.raises(Invalid, match="ratio: must be a number"):
        Outer.parse({"name": "a", "ratio": "0.25"})                 # strict by default


def test_dumps_parse_back_to_the_same_record(tmp_path):
    config = load_config(REPO / "config.example.yaml", {"mqtt.outbox": str(tmp_path)})
    data = config.dump()
    assert data["mqtt"]["outbox"] == str(tmp_path) and data["counting"]["line"]["points"] == [[0.0, 0.55], [1.0, 0.55]]
    assert RunConfig.parse(data) == config
    assert RunConfig.parse(config.dump(exclude_none=True)) == config


def test_the_manifest_keeps_its_schema_key(tmp_path, detector_artifact):
    manifest = read_manifest(detector_artifact)
    assert manifest.to_json().lstrip("{\n ").startswith('"schema": "edgecv.artifact/1"')
    (tmp_path / "manifest.json").write_text(manifest.to_json())
    assert read_manifest(tmp_path) == manifest
