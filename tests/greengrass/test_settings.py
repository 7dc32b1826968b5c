"""The component configuration: Greengrass' strings parsed defensively into the YAML RunConfig's types, bad
keys named in one line, the device from the thing name, accessControl for exactly the topics used."""
from __future__ import annotations

from pathlib import Path

import pytest

from edgecv.edge.config import RunConfig, load_config
from edgecv.edge.errors import ConfigError
from edgecv.greengrass.settings import access_control, default_configuration, parse_component_config

REPO = Path(__file__).resolve().parents[2]
KINDS = ("counts", "stats", "status", "main/counts", "main/events")  # the box's topics, then the one camera's


@pytest.mark.parametrize("given, read", [
    ({"detect": {"score_threshold": "0.7"}}, lambda r: r.detect.score_threshold == 0.7),
    ({"detect": {"max_detections": "50"}}, lambda r: r.detect.max_detections == 50),
    ({"tracker": {"max_age": 15.0}}, lambda r: r.tracker.max_age == 15),            # JSON made it a float
    ({"tracker": {"max_age": "15.0"}}, lambda r: r.tracker.max_age == 15),
    ({"mqtt": {"qos": "0"}}, lambda r: r.mqtt.qos == 0),                             # a Literal[0, 1]
    ({"mqtt": {"qos": 1.0}}, lambda r: r.mqtt.qos == 1),
    ({"mqtt": {"tls": {"insecure": "true"}, "url": "mqtts://h:8883"}}, lambda r: r.mqtt.tls.insecure is True),
    ({"mqtt": {"tls": ""}}, lambda r: r.mqtt.tls is None),                            # "" for an optional section
    ({"counting": {"line": "null"}}, lambda r: r.counting.line is None),
    ({"counting": {"line": {"points": [["0", "0.5"], ["1", "0.5"]], "in_side": "right"}}},
     lambda r: r.counting.line.points == ((0.0, 0.5), (1.0, 0.5))),
    ({"counting": {"zones": '[{"name": "a", "polygon": [[0, 0], [1, 0], [1, 1]]}]'}},   # JSON text
     lambda r: r.counting.zones[0].name == "a"),
    ({"counting": {"groups": {"bicycle": "goods"}}}, lambda r: r.counting.groups == {"bicycle": "goods"}),
    ({"device": "123"}, lambda r: r.device == "123"),                                # a string stays a string
    ({"stats_interval": "2.5"}, lambda r: r.stats_interval == 2.5),
])
def test_strings_from_a_deployment_are_parsed(given, read):
    settings = parse_component_config({"source": "0", **given}, thing_name="t")
    assert read(settings.run)


def test_component_keys_and_defaults(tmp_path):
    s = parse_component_config({"source": "rtsp://cam/1", "publish": "local", "max_frames": "20",
                                "accessControl": {"anything": {}}}, thing_name="store-12", work=tmp_path)
    assert (s.source, s.publish, s.model, s.max_frames) == ("rtsp://cam/1", "local", "", 20)
    assert s.run.device == "store-12"                     # empty device: the thing name
    assert s.run.mqtt.outbox == tmp_path / "outbox"       # the outbox lives in the work folder
    assert s.run.mqtt.topic_prefix == "edgecv"


def test_errors_name_every_bad_key_in_one_line():
    with pytest.raises(ConfigError) as info:
        parse_component_config({"source": "", "publish": "kinesis", "detect": {"score_threshold": "high"},
                                "counting": {"window": "0"}, "colour": "red"})
    message = str(info.value)
    assert "\n" not in message
    for key in ("publish:", "detect.score_threshold:", "counting.window:", "colour:"):
        assert key in message, message
    with pytest.raises(ConfigError, match="is not a mapping"):
        parse_component_config(["source"])
    with pytest.raises(ConfigError, match="no camera: set `source`"):
        parse_component_config({"source": ""})


def test_several_cameras_from_a_deployment():
    """`sources` as a deployment sends it (JSON text, numbers as strings): each camera with its own topics; a
    `source` left over from the recipe's defaults yields to the list."""
    sources = ('[{"name": "door", "url": "rtsp://cam/1", "counting": {"window": "3", "line": '
               '{"points": [[0, 0.5], [1, 0.5]]}}}, {"name": "shelf", "url": "/dev/video2"}]')
    s = parse_component_config({"source": "0", "sources": sources}, thing_name="box-1")
    assert [(c.name, c.url) for c in s.run.sources] == [("door", "rtsp://cam/1"), ("shelf", "/dev/video2")]
    assert s.run.counting_of(s.run.sources[0]).window == 3 and s.run.counting_of(s.run.sources[1]).window == 15
    assert s.pipeline_key()[0] == (("door", "rtsp://cam/1"), ("shelf", "/dev/video2"))
    one = parse_component_config({"source": "0"}, thing_name="box-1")
    assert [(c.name, c.url) for c in one.run.sources] == [("main", "0")]
    (policy,) = access_control({"source": "", "sources": sources, "device": "box-1"})[
        "aws.greengrass.ipc.mqttproxy"].values()
    assert policy["resources"] == [f"edgecv/box-1/{k}" for k in ("counts", "stats", "status", "door/counts",
                                                                  "door/events", "shelf/counts", "shelf/events")]
    with pytest.raises(ConfigError, match="camera names in sources must be unique"):
        parse_component_config({"sources": [{"name": "a", "url": "0"}, {"name": "a", "url": "1"}]})


def test_thing_name_that_cannot_be_a_device():
    with pytest.raises(ConfigError, match="set `device`"):
        parse_component_config({"source": "0"}, thing_name="arn:aws:iot:thing")
    assert parse_component_config({"source": "0", "device": "door"}, thing_name="a:b").run.device == "door"


def test_default_configuration_mirrors_the_yaml_run_config():
    run = load_config(REPO / "config.example.yaml")
    config = default_configuration(run, "/dev/video0", "iotcore")
    settings = parse_component_config(config, thing_name="x")
    assert settings.run.counting == run.counting and settings.run.detect == run.detect
    assert settings.run.mqtt.interval == run.mqtt.interval
    assert config["device"] == "" and "http" not in config     # the web view does not run inside Greengrass


@pytest.mark.parametrize("publish, device, fmt, service, resources", [
    ("iotcore", "", "edgecv", "aws.greengrass.ipc.mqttproxy",
     [f"edgecv/{{iot:thingName}}/{k}" for k in KINDS]),
    ("local", "door-1", "edgecv", "aws.greengrass.ipc.pubsub", [f"edgecv/door-1/{k}" for k in KINDS]),
    ("iotcore", "door-1", "dlr", "aws.greengrass.ipc.mqttproxy",
     [f"edgecv/door-1/{k}" for k in KINDS] + ["ml/dlr/object-detection"]),
])
def test_access_control_grants_exactly_the_topics_used(publish, device, fmt, service, resources):
    run = RunConfig.parse({"mqtt": {"format": fmt}})
    config = default_configuration(run, "0", publish, device)
    policies = config["accessControl"]
    assert list(policies) == [service]
    (policy,) = policies[service].values()
    assert policy["resources"] == resources
    assert policy["operations"] == (["aws.greengrass#PublishToIoTCore"] if publish == "iotcore"
                                    else ["aws.greengrass#PublishToTopic"])
    assert access_control({**config, "publish": "mqtt"}) == {}    # straight to a broker: no IPC publishing
