"""The counter component's configuration: the YAML ``RunConfig`` plus what only a component needs.

A deployment's configuration reaches the component through IPC (``GetConfiguration``), and values loaded from
a deployment's YAML or JSON may come back as strings (``"0.5"``, ``"true"``, ``"15"``) or numbers as floats
(``15.0``). ``parse_component_config`` first coerces such values towards the types the model declares (guided
by its JSON schema, so a string field such as ``device: "123"`` stays a string), then validates with the same
pydantic model as the YAML file: every bad key is named in one line.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from edgecv.edge.config import MqttConfig, RunConfig
from edgecv.edge.errors import ConfigError
from edgecv.greengrass import COMPONENT, PUBLISH_TARGETS
ACCESS_CONTROL = "accessControl"
KINDS = ("counts", "events", "stats", "status")   # the topics a publisher uses: <prefix>/<device>/<kind>


class ComponentConfig(RunConfig):
    """``RunConfig`` (device, detect, tracker, counting, mqtt, stats_interval, streams) and the component's own keys."""

    source: str = Field(min_length=1, description="camera index or /dev/videoN, video file, rtsp:// or http:// "
                        "stream, image folder or glob")
    publish: Literal["iotcore", "local", "mqtt"] = Field(
        "iotcore", description="iotcore: AWS IoT Core through the nucleus (IPC PublishToIoTCore); local: the "
        "nucleus' local pub/sub (IPC PublishToTopic); mqtt: straight to the broker in mqtt.url")
    model: str = Field("", description="detector artifact folder; empty: the model component's artifact")
    max_frames: int = Field(0, ge=0, description="stop after this many frames (0: never; for trials)")
    device: str = Field("", pattern=r"^[A-Za-z0-9_.-]*$",
                        description="device name in topics and messages; empty: the core device's thing name")


@dataclass(frozen=True)
class ComponentSettings:
    source: str
    publish: str
    model: str
    max_frames: int
    run: RunConfig          # always with an ``mqtt`` section: topics, QoS and intervals of every target

    def pipeline_key(self) -> tuple:
        """What a running pipeline (source, detector, its streams) can't change without being rebuilt."""
        return self.source, self.model, self.run.streams

    def publisher_key(self) -> tuple:
        """What a publisher can't change without being replaced: target, device, connection."""
        m = self.run.mqtt
        connection = m.model_dump(mode="json", exclude={"interval", "format", "dlr_topic"})
        return self.publish, self.run.device, json.dumps(connection, sort_keys=True)


# --- defensive coercion, guided by the model's JSON schema ---------------------------------------------

_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}
_NULL = {"", "null", "none", "~"}


def _resolve(schema: dict, defs: dict) -> dict:
    while "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _number(text: str):
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value


def coerce(value, schema: dict, defs: dict):
    """``value`` with strings (and integral floats) turned into the types ``schema`` asks for, where that is
    unambiguous; anything else is returned unchanged for the validator to report."""
    schema = _resolve(schema, defs)
    if "anyOf" in schema:
        branches = [_resolve(b, defs) for b in schema["anyOf"]]
        if any(b.get("type") == "null" for b in branches) and isinstance(value, str) and value.strip().lower() in _NULL:
            return None
        for branch in branches:
            if branch.get("type") != "null":
                coerced = coerce(value, branch, defs)
                if coerced is not value:
                    return coerced
        return value
    kind = schema.get("type")
    choices = schema.get("enum", [schema["const"]] if "const" in schema else None)
    if choices is not None and isinstance(value, (str, float)) and value not in choices:
        for choice in choices:
            if isinstance(choice, int) and not isinstance(choice, bool):
                number = _number(value) if isinstance(value, str) else value
                if number is not None and number == choice:
                    return choice
            elif isinstance(choice, str) and isinstance(value, str) and value.strip() == choice:
                return choice
        return value
    if isinstance(value, str) and kind in ("object", "array"):
        try:
            parsed = json.loads(value)            # a structure passed as JSON text
        except ValueError:
            return value
        return coerce(parsed, schema, defs) if isinstance(parsed, (dict, list)) else value
    if kind == "integer":
        number = _number(value) if isinstance(value, str) else value
        if isinstance(number, float) and number.is_integer():
            return int(number)
        return value
    if kind == "number" and isinstance(value, str):
        number = _number(value)
        return value if number is None else number
    if kind == "boolean" and isinstance(value, str):
        text = value.strip().lower()
        return True if text in _TRUE else False if text in _FALSE else value
    if kind == "object" and isinstance(value, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        out = {}
        for key, item in value.items():
            if key in properties:
                out[key] = coerce(item, properties[key], defs)
            elif isinstance(extra, dict):
                out[key] = coerce(item, extra, defs)
            else:
                out[key] = item
        return out
    if kind == "array" and isinstance(value, list):
        prefix = schema.get("prefixItems")
        if prefix:
            return [coerce(v, prefix[i], defs) if i < len(prefix) else v for i, v in enumerate(value)]
        if isinstance(schema.get("items"), dict):
            return [coerce(v, schema["items"], defs) for v in value]
    return value


_SCHEMA = None


def _schema() -> dict:
    global _SCHEMA
    if _SCHEMA is None:
        _SCHEMA = ComponentConfig.model_json_schema()
    return _SCHEMA


def _errors(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors())


def parse_component_config(value: dict | None, *, thing_name: str | None = None, work: Path | None = None,
                           component: str = COMPONENT) -> ComponentSettings:
    """A component configuration (as ``GetConfiguration`` returns it) -> validated settings.

    ``device`` empty -> the thing name; no ``mqtt.outbox`` -> ``<work>/outbox``. Raises ``ConfigError``."""
    if not isinstance(value, dict):
        raise ConfigError(f"the configuration of {component} is not a mapping", "deploy a mapping of keys")
    data = {k: v for k, v in value.items() if k != ACCESS_CONTROL}
    schema = _schema()
    data = coerce(data, schema, schema.get("$defs", {}))
    try:
        parsed = ComponentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration of {component}: {_errors(exc)}",
                          "fix the keys named above (deploy a configuration merge, see README: Greengrass)") from None
    device = parsed.device or _device_from_thing(thing_name, component)
    mqtt = parsed.mqtt or MqttConfig()
    if mqtt.outbox is None and work is not None:
        mqtt = mqtt.model_copy(update={"outbox": Path(work) / "outbox"})
    run_fields = set(RunConfig.model_fields)
    run = RunConfig.model_validate({**{k: getattr(parsed, k) for k in run_fields if k in parsed.model_fields_set},
                                    "device": device, "mqtt": mqtt})
    return ComponentSettings(parsed.source, parsed.publish, parsed.model, parsed.max_frames, run)


def _device_from_thing(thing_name: str | None, component: str) -> str:
    if not thing_name:
        return "edgecv"
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", thing_name):
        raise ConfigError(f"the thing name {thing_name!r} can't be a device name in topics (letters, digits, "
                          "_ . - only)", f"set `device` in the configuration of {component}")
    return thing_name


# --- what a recipe declares ------------------------------------------------------------------------------

def default_configuration(run: RunConfig, source: str, publish: str = "iotcore", device: str = "") -> dict:
    """A recipe's ``DefaultConfiguration``: the YAML ``RunConfig`` (without the web view, which doesn't run
    inside Greengrass) plus the component's keys, and the ``accessControl`` for exactly the topics used."""
    if publish not in PUBLISH_TARGETS:
        raise ConfigError(f"unknown publish target {publish!r}", f"use one of {', '.join(PUBLISH_TARGETS)}")
    data = run.model_dump(mode="json", exclude_none=True, exclude={"http", "device"})
    data.setdefault("mqtt", MqttConfig().model_dump(mode="json", exclude_none=True))
    config = {"source": source, "publish": publish, "model": "", "max_frames": 0, "device": device, **data}
    parse_component_config(config, thing_name="check")          # what we write must parse
    config[ACCESS_CONTROL] = access_control(config)
    return config


def access_control(config: dict, component: str = COMPONENT) -> dict:
    """IPC authorization policies for the topics this configuration publishes to (and nothing else): the
    four ``<prefix>/<device>/<kind>`` topics, plus the DLR topic with ``mqtt.format: dlr``. An empty device
    (the thing name) is written as ``{iot:thingName}``, which the nucleus interpolates (v2.6.0 and later)."""
    settings = parse_component_config({k: v for k, v in config.items()}, thing_name="thing")
    device = settings.run.device if config.get("device") else "{iot:thingName}"
    mqtt = settings.run.mqtt
    topics = [f"{mqtt.topic_prefix}/{device}/{kind}" for kind in KINDS]
    if mqtt.format == "dlr":
        topics.append(mqtt.dlr_topic)
    if settings.publish == "iotcore":
        return {"aws.greengrass.ipc.mqttproxy": {f"{component}:mqttproxy:1": {
            "policyDescription": "Publish counts, events, stats and status to AWS IoT Core",
            "operations": ["aws.greengrass#PublishToIoTCore"], "resources": topics}}}
    if settings.publish == "local":
        return {"aws.greengrass.ipc.pubsub": {f"{component}:pubsub:1": {
            "policyDescription": "Publish counts, events, stats and status on local pub/sub",
            "operations": ["aws.greengrass#PublishToTopic"], "resources": topics}}}
    return {}   # mqtt: straight to a broker, no IPC publishing


def thing_name() -> str | None:
    """The core device's thing name, as the nucleus gives it to components."""
    return os.environ.get("AWS_IOT_THING_NAME") or None
