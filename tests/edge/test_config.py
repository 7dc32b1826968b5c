import pytest

from edgecv.edge.config import load_config, parse_config
from edgecv.edge.errors import ConfigError
from conftest import REPO


def test_example_config_is_valid():
    config = load_config(REPO / "config.example.yaml")
    assert config.counting.line.name == "door" and config.mqtt.port == 1883


@pytest.mark.parametrize("data,key", [
    ({"detect": {"score_treshold": 0.4}}, "detect.score_treshold"),
    ({"detect": {"score_threshold": 1.5}}, "detect.score_threshold"),
    ({"counting": {"line": {"points": [[0, 0], [0, 0]]}}}, "counting.line.points"),
    ({"counting": {"zones": [{"name": "a", "polygon": [[0, 0], [1, 1]]}]}}, "counting.zones.0.polygon"),
    ({"counting": {"zones": [{"name": "a", "polygon": [[0, 0], [2, 0], [1, 1]]}]}}, "outside the frame"),
    ({"mqtt": {"url": "localhost:1883"}}, "mqtt.url"),
    ({"mqtt": {"qos": 2}}, "mqtt.qos"),
    ({"mqtt": {"tls": {"cert_file": "/nope.crt"}}}, "cert_file and key_file go together"),
    ({"device": "has space"}, "device"),
    ({"counting": {"groups": {"car": "vehicles"}}}, "counting.groups.car"),
    ({"streams": 0}, "streams"),
])
def test_bad_values_name_the_key(data, key):
    with pytest.raises(ConfigError, match="invalid") as info:
        parse_config(data)
    assert key in str(info.value) and "\n" not in str(info.value)


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("device: a\ncounting:\n  window: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(path)


def test_overrides_and_missing_file(tmp_path):
    config = load_config(None, {"mqtt.url": "mqtts://broker:8884", "device": "cam1"})
    assert config.device == "cam1" and config.mqtt.uses_tls and config.mqtt.port == 8884
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "none.yaml")
