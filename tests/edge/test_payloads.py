"""Messages validate against the JSON Schemas shipped beside the payloads module."""
import json
from importlib import resources

import jsonschema
import numpy as np
import pytest

from edgecv.edge.counting import Counts
from edgecv.edge.detections import Detections
from edgecv.edge.payloads import (SCHEMA_FILES, box_counts_message, counts_message, dlr_message, event_message,
                                  stats_message)


def schema(name):
    return json.loads(resources.files("edgecv.edge").joinpath(f"schemas/{SCHEMA_FILES[name]}").read_text())


def validate(message):
    jsonschema.validate(message, schema(message["schema"]), format_checker=jsonschema.FormatChecker())


COUNTS = Counts(people=2, goods=5, by_class={"person": 2, "bottle": 5}, people_in=3, people_out=1, zones={"a": 4},
                lines={"door": {"in": 3, "out": 1, "by_class": {"person": {"in": 3, "out": 1}}}},
                zone_detail={"a": {"by_class": {"bottle": 4}, "entered": 9, "left": 5, "dwell_s_total": 12.5}})


def test_counts_message_validates():
    m = {**counts_message("box1", "door", "ssd", 7, 1_700_000_000.25, COUNTS), "seq": 1}
    validate(m)
    assert m["ts"] == "2023-11-14T22:13:20.250Z" and m["counts"] == {"people": 2, "goods": 5}
    assert m["camera"] == "door" and m["lines"]["door"]["by_class"]["person"] == {"in": 3, "out": 1}


def test_box_counts_sum_the_cameras():
    other = Counts(people=1, goods=0, by_class={}, people_in=2, people_out=2, zones={})
    m = {**box_counts_message("box1", "ssd", 0.0, {"door": (7, COUNTS), "aisle": (3, other)}), "seq": 5}
    validate(m)
    assert m["totals"] == {"people": 3, "goods": 5, "people_in": 5, "people_out": 3}
    assert list(m["cameras"]) == ["aisle", "door"] and m["cameras"]["door"]["frame"] == 7
    with pytest.raises(jsonschema.ValidationError):
        validate({**m, "cameras": {}})


@pytest.mark.parametrize("event", [
    {"type": "line_crossing", "line": "door", "direction": "in", "track_id": 4, "class": "person"},
    {"type": "zone_change", "zone": "a", "group": "goods", "before": 1, "after": 2},
    {"type": "zone_enter", "zone": "a", "group": "goods", "track_id": 5, "class": "bottle"},
    {"type": "zone_leave", "zone": "a", "group": "goods", "track_id": 5, "class": "bottle", "dwell_s": 3.2},
])
def test_event_messages_validate(event):
    validate({**event_message("box1", "door", "ssd", 7, 0.0, event), "seq": 2})


def test_bad_messages_are_rejected_by_the_schema():
    m = {**counts_message("box1", "door", "ssd", 7, 0.0, COUNTS), "seq": 1}
    with pytest.raises(jsonschema.ValidationError):
        validate({**m, "counts": {"people": -1, "goods": 0}})
    with pytest.raises(jsonschema.ValidationError):
        validate({k: v for k, v in m.items() if k != "camera"})
    with pytest.raises(jsonschema.ValidationError):
        validate({**event_message("c", "d", "m", 1, 0.0, {"type": "line_crossing", "line": "d"}), "seq": 3})
    with pytest.raises(jsonschema.ValidationError):  # a leave without its dwell time
        validate({**event_message("c", "d", "m", 1, 0.0, {"type": "zone_leave", "zone": "a", "group": "goods",
                                                          "track_id": 1, "class": "x"}), "seq": 3})


def test_stats_message_validates():
    camera = {"frames": 3, "fps": 1.5, "latency_ms": {"p50": 1, "p99": 2}, "dropped": 0, "errors": 0,
              "connected": True}
    validate({**stats_message("box1", 0.0, {**camera, "queued": 0}, {"door": camera}, {"mqtt": 0, "video": 2}),
              "seq": 4})


def test_dlr_shape():
    d = Detections(np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.float32), np.array([0.2, 0.9], np.float32), np.array([0, 1]))
    m = dlr_message(0.0, d, lambda i: ["cat", "dog"][i])
    assert m["inference-type"] == "object-detection"
    assert m["inference-results"] == [{"Label": "dog", "Score": "0.9000", "Box": "[5.0, 6.0, 7.0, 8.0]"}]


def test_the_sample_messages_in_the_docs_validate():
    """docs/counting.md shows a message per topic: each must be one the schemas accept."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "counting.md").read_text()
    samples = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, re.S)]
    assert {m["schema"] for m in samples} == set(SCHEMA_FILES)
    for message in samples:
        validate(message)
