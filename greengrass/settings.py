"""The counter component's configuration: the YAML ``RunConfig`` plus what only a component needs.

A deployment's configuration reaches the component through IPC (``GetConfiguration``), and values loaded from
a deployment's YAML or JSON may come back as strings (``"0.5"``, ``"true"``, ``"15"``) or numbers as floats
(``15.0``). ``parse_component_config`` reads them leniently, towards the types the record declares (so a string
field such as ``device: "123"`` stays a string), and validates them with the same records as the YAML file:
every bad key is named in one line.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edgecv.edge.config import DEFAULT_CAMERA, CameraConfig, MqttConfig, RunConfig
from edgecv.edge.errors import ConfigError
from edgecv.edge.typed import Invalid, field
from edgecv.greengrass import COMPONENT, PUBLISH_TARGETS

ACCESS_CONTROL = "accessControl"
BOX_KINDS = ("counts", "stats", "status")      # the box's topics: <prefix>/<device>/<kind>
CAMERA_KINDS = ("counts", "events")            # each camera's: <prefix>/<device>/<camera>/<kind>


class ComponentConfig(RunConfig):
    """``RunConfig`` (device, sources, detect, tracker, counting, mqtt, stats_interval, streams) and the component's
    own keys."""

    source: str = field("", description="one camera (named main): camera index or /dev/videoN, video file, rtsp:// "
                        "or http:// stream, image folder or glob; ignored when `sources` lists cameras")
    publish: Literal["iotcore", "local", "mqtt"] = field(
        "iotcore", description="iotcore: AWS IoT Core through the nucleus (IPC PublishToIoTCore); local: the "
        "nucleus' local pub/sub (IPC PublishToTopic); mqtt: straight to the broker in mqtt.url")
    model: str = field("", description="detector artifact folder; empty: the model component's artifact")
    max_frames: int = field(0, ge=0, description="stop after this many frames (0: never; for trials)")
    device: str = field("", pattern=r"^[A-Za-z0-9_.-]*$",
                        description="device name in topics and messages; empty: the core device's thing name")

    def check(self) -> None:
        super().check()
        if not (self.source or self.sources):
            raise ValueError("no camera: set `source` (one camera) or `sources` (a list of cameras, which wins over "
                             "`source` when both are set)")


@dataclass(frozen=True)
class ComponentSettings:
    source: str
    publish: str
    model: str
    max_frames: int
    run: RunConfig          # always with an ``mqtt`` section: topics, QoS and intervals of every target

    def pipeline_key(self) -> tuple:
        """What a running pipeline (cameras and their URLs, detector, its streams) can't change without being
        rebuilt (a camera's counting can)."""
        return tuple((c.name, c.url) for c in self.run.sources), self.model, self.run.streams

    def publisher_key(self) -> tuple:
        """What a publisher can't change without being replaced: target, device, connection."""
        m = self.run.mqtt
        connection = m.dump(exclude={"interval", "format", "dlr_topic"})
        return self.publish, self.run.device, json.dumps(connection, sort_keys=True)


def parse_component_config(value: dict | None, *, thing_name: str | None = None, work: Path | None = None,
                           component: str = COMPONENT) -> ComponentSettings:
    """A component configuration (as ``GetConfiguration`` returns it) -> validated settings.

    ``device`` empty -> the thing name; no ``mqtt.outbox`` -> ``<work>/outbox``. Raises ``ConfigError``."""
    if not isinstance(value, dict):
        raise ConfigError(f"the configuration of {component} is not a mapping", "deploy a mapping of keys")
    data = {k: v for k, v in value.items() if k != ACCESS_CONTROL}
    try:
        parsed = ComponentConfig.parse(data, lax=True)
    except Invalid as exc:
        raise ConfigError(f"invalid configuration of {component}: {exc}",
                          "fix the keys named above (deploy a configuration merge, see docs/greengrass.md)") from None
    device = parsed.device or _device_from_thing(thing_name, component)
    mqtt = parsed.mqtt or MqttConfig()
    if mqtt.outbox is None and work is not None:
        mqtt = mqtt.replace(outbox=Path(work) / "outbox")
    sources = parsed.sources or [CameraConfig(name=DEFAULT_CAMERA, url=parsed.source)]
    run = RunConfig.parse({**{k: getattr(parsed, k) for k in RunConfig.fields() if k in parsed.given},
                           "device": device, "mqtt": mqtt, "sources": sources})
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
    data = run.dump(exclude_none=True, exclude={"http", "device", "state"})
    if source:  # one camera given: it replaces the configuration's list (deployments merge into these keys)
        data["sources"] = []
    data.setdefault("mqtt", MqttConfig().dump(exclude_none=True))
    config = {"source": source, "publish": publish, "model": "", "max_frames": 0, "device": device, **data}
    parse_component_config(config, thing_name="check")          # what we write must parse
    config[ACCESS_CONTROL] = access_control(config)
    return config


def access_control(config: dict, component: str = COMPONENT) -> dict:
    """IPC authorization policies for the topics this configuration publishes to (and nothing else): the box's
    ``<prefix>/<device>/{counts,stats,status}``, each camera's ``<prefix>/<device>/<camera>/{counts,events}``,
    plus the DLR topic with ``mqtt.format: dlr``. An empty device (the thing name) is written as
    ``{iot:thingName}``, which the nucleus interpolates (v2.6.0 and later)."""
    settings = parse_component_config({k: v for k, v in config.items()}, thing_name="thing")
    device = settings.run.device if config.get("device") else "{iot:thingName}"
    mqtt = settings.run.mqtt
    topics = [f"{mqtt.topic_prefix}/{device}/{kind}" for kind in BOX_KINDS]
    topics += [f"{mqtt.topic_prefix}/{device}/{camera.name}/{kind}" for camera in settings.run.sources
               for kind in CAMERA_KINDS]
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
