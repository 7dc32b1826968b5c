"""The configuration reference and schemas are generated from the records and current; config.example.yaml and the
reference cover every key of the records (or the key is listed as not shown, with the reason)."""
from __future__ import annotations

import json

import jsonschema
import pytest
import yaml

from edgecv import configdoc
from edgecv.edge.config import RunConfig
from edgecv.greengrass.settings import ComponentConfig


def test_generated_files_are_current():
    stale = [str(p.relative_to(configdoc.ROOT)) for p, text in configdoc.render().items()
             if not p.is_file() or p.read_text() != text]
    assert not stale, f"{stale} differ from a fresh generation: run python -m edgecv.configdoc (make docs)"


def test_check_flag_reports_a_stale_file(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "configuration.md"
    stale.write_text("old\n")
    monkeypatch.setattr(configdoc, "render", lambda: {stale: "new\n"})
    monkeypatch.setattr(configdoc, "ROOT", tmp_path)
    assert configdoc.main(["--check"]) == 1
    assert "configuration.md is not current" in capsys.readouterr().err
    assert configdoc.main([]) == 0 and stale.read_text() == "new\n"
    assert configdoc.main(["--check"]) == 0


def test_every_record_key_is_in_the_reference():
    doc = configdoc.DOC.read_text()
    keys = [k.path for k in configdoc.keys(RunConfig)] + [k.path for k in configdoc.keys(ComponentConfig)]
    missing = [k for k in keys if f"`{k}`" not in doc]
    assert not missing, f"docs/configuration.md lacks {missing}"
    assert len(keys) > 40                                     # the walk reached the nested sections


def test_example_shows_every_key_or_says_why_not():
    data = configdoc.example_data(configdoc.EXAMPLE.read_text())
    shown = configdoc.covered_keys(data, RunConfig)
    every = {k.path for k in configdoc.keys(RunConfig)}
    unexplained = sorted(every - shown - set(configdoc.NOT_IN_EXAMPLE))
    assert not unexplained, (f"config.example.yaml does not show {unexplained}: add them to it, or to "
                             "edgecv/configdoc.py NOT_IN_EXAMPLE with the reason")
    stale = sorted(k for k in configdoc.NOT_IN_EXAMPLE if k in shown or k not in every)
    assert not stale, f"NOT_IN_EXAMPLE lists keys that are shown or no longer exist: {stale}"
    assert all(reason.strip() for reason in configdoc.NOT_IN_EXAMPLE.values())


def test_commented_keys_count_as_shown_and_prose_does_not():
    text = ("mqtt:\n  url: mqtt://h:1883\n  # username: edge\n  # tls: {ca_file: ca.crt}\n"
            "streams: 1   # frames at once\n             # cores: 2 on a 2-core box, more frames/s\n")
    shown = configdoc.shown_keys(configdoc.example_data(text), RunConfig)
    assert shown == {"mqtt", "mqtt.url", "mqtt.username", "mqtt.tls", "mqtt.tls.ca_file", "streams"}


def test_the_example_is_valid_for_the_records_and_the_schema():
    example = yaml.safe_load(configdoc.EXAMPLE.read_text())
    RunConfig.parse(example)
    schema = json.loads(configdoc.RUN_SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(example, schema)


@pytest.mark.parametrize("bad, where", [
    ({"detect": {"score_treshold": 0.5}}, "score_treshold"),           # unknown key
    ({"streams": 0}, "streams"),                                       # below its bound
    ({"mqtt": {"qos": 2}}, "qos"),                                     # not one of the choices
    ({"counting": {"line": {"points": [[0, 0]]}}}, "points"),          # a pair is two points
    ({"counting": {"zones": [{"polygon": [[0, 0], [1, 0], [1, 1]]}]}}, "name"),   # required
    ({"http": {"token": "short"}}, "token"),                           # too short
])
def test_the_schema_refuses_what_the_records_refuse(bad, where):
    schema = json.loads(configdoc.RUN_SCHEMA.read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    with pytest.raises(ValueError, match=where):
        RunConfig.parse(bad)


def test_component_schema_takes_a_component_configuration():
    schema = json.loads(configdoc.COMPONENT_SCHEMA.read_text())
    config = {"source": "/dev/video0", "publish": "local", "max_frames": 0, "detect": {"score_threshold": 0.6}}
    jsonschema.validate(config, schema)
    ComponentConfig.parse(config)
    jsonschema.validate({"publish": "local"}, schema)  # a camera (`source` or `sources`) is a rule across keys,
    with pytest.raises(ValueError, match="no camera"):  # which the record checks
        ComponentConfig.parse({"publish": "local"})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"source": "0", "http": {}}, schema)       # no web view inside Greengrass
