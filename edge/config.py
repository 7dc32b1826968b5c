"""The edge loop's configuration: typed, validated once at start, every field described.

One set of records (``edge/typed.py``) serves the YAML file, the CLI flags and the Greengrass component's
configuration.
Coordinates of lines and zones are fractions of the frame (0..1), so they survive a resolution change.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import yaml

from edgecv.edge.errors import ConfigError
from edgecv.edge.typed import Invalid, Record, field

Point = tuple[float, float]


def _in_frame(points: list[Point]) -> list[Point]:
    for x, y in points:
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise ValueError(f"point ({x}, {y}) is outside the frame: use fractions of width/height in 0..1")
    return points


def _line_points(v) -> None:
    _in_frame(list(v))
    if v[0] == v[1]:
        raise ValueError("line points must differ")


def _zone_polygon(v) -> None:
    _in_frame(v)
    crossing = _self_intersection(v)
    if crossing is not None:
        raise ValueError(f"polygon edges {crossing[0] + 1} and {crossing[1] + 1} cross each other: "
                         "draw the corners in order around the zone")
    area = 0.5 * abs(sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in zip(v, v[1:] + v[:1])))
    if area < 1e-4:
        raise ValueError("polygon encloses no area (its corners are on one line or too close together)")


Anchor = Literal["bottom_center", "center", "top_center"]


class LineConfig(Record):
    name: str = field("door", description="name used in events and in the counts' `lines`")
    points: tuple[Point, Point] = field(description="two points A, B as fractions of the frame", check=_line_points)
    in_side: Literal["left", "right"] = field(
        "left", description="side of the direction A->B that is 'inside': crossing towards it counts as in")
    anchor: Anchor = field("bottom_center", description="the point of a person's box that crosses the line: "
                           "bottom_center (the feet, what stands on the floor), center or top_center")
    hysteresis: float = field(0.02, ge=0.0, le=0.5, description="how far (a fraction of the frame's diagonal) the "
                              "anchor must be from the line, on one side and then on the other, for a crossing to "
                              "count: a box jittering on the line counts nothing")


class ZoneConfig(Record):
    name: str = field(description="zone name (a shelf), used in counts and events")
    polygon: list[Point] = field(min_length=3, max_length=64, description="polygon corners, fractions of the frame",
                                 check=_zone_polygon)
    group: Literal["goods", "people"] = field("goods", description="which group is counted in the zone")
    anchor: Anchor | None = field(None, description="the point of a box that must be inside: bottom_center, center "
                                  "or top_center; unset: bottom_center for people, center for goods")


def _self_intersection(polygon: list[Point]) -> tuple[int, int] | None:
    """The first pair of non-adjacent edges that touch or cross, as edge indexes, or None."""
    def orient(a, b, c):
        v = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
        return (v > 1e-12) - (v < -1e-12)

    def on_segment(a, b, p):
        return min(a[0], b[0]) <= p[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= p[1] <= max(a[1], b[1])

    def touch(p1, p2, q1, q2):
        o1, o2, o3, o4 = orient(p1, p2, q1), orient(p1, p2, q2), orient(q1, q2, p1), orient(q1, q2, p2)
        if o1 != o2 and o3 != o4:
            return True
        return any(o == 0 and on_segment(*seg, p) for o, seg, p in
                   ((o1, (p1, p2), q1), (o2, (p1, p2), q2), (o3, (q1, q2), p1), (o4, (q1, q2), p2)))

    n = len(polygon)
    edges = [(polygon[i], polygon[(i + 1) % n]) for i in range(n)]
    for i in range(n):
        for j in range(i + 2, n):
            if i == 0 and j == n - 1:
                continue  # neighbours through the closing corner
            if touch(*edges[i], *edges[j]):
                return i, j
    return None


class DetectConfig(Record):
    score_threshold: float = field(0.5, ge=0.0, le=1.0, description="detections below this score are dropped")
    nms_iou: float = field(0.45, gt=0.0, le=1.0, description="IoU above which same-class boxes are merged")
    max_detections: int = field(100, ge=1, le=1000, description="at most this many detections per frame")


class TrackerConfig(Record):
    iou_threshold: float = field(0.3, gt=0.0, lt=1.0, description="minimum IoU to continue a track")
    max_age: int = field(15, ge=1, description="frames a lost track is kept before it ends")
    min_hits: int = field(2, ge=1, description="frames before a new track gets counted")
    low_score: float = field(0.1, ge=0.0, le=1.0, description="second-pass detections (ByteTrack) above this")


class CountingConfig(Record):
    window: int = field(15, ge=1, description="frames over which the people and goods present are smoothed (median)")
    inertia: int = field(5, ge=1, le=300, description="frames in a row an object's anchor must be inside (outside) "
                         "a zone before it enters (leaves) it: a box on a zone's edge doesn't flicker")
    line: LineConfig | None = field(None, description="door line for people in/out")
    zones: list[ZoneConfig] = field(default_factory=list, description="shelf zones for goods")
    groups: dict[str, Literal["people", "goods", "ignore"]] = field(
        default_factory=dict, description="class name -> group overrides on top of the model's defaults")

    def check(self) -> None:
        names = [z.name for z in self.zones]
        if len(names) != len(set(names)):
            raise ValueError(f"zone names must be unique, got {names}")


DEFAULT_CAMERA = "main"  # the name of the one camera given as `--source URL` (or a component's `source`)
_NAME = r"^[A-Za-z0-9_.-]+$"


class CameraConfig(Record):
    name: str = field(pattern=_NAME, description="camera name in topics (<prefix>/<device>/<name>/...), messages, "
                      "the web view and /metrics")
    url: str = field(min_length=1, description="camera index or /dev/videoN, video file, rtsp:// or http:// stream, "
                     "image folder or glob")
    counting: CountingConfig | None = field(None, description="this camera's line, zones and smoothing; unset: the "
                                            "top-level `counting`")


def parse_source_arg(value: str) -> CameraConfig:
    """``--source URL`` (the camera named ``main``) or ``--source NAME=URL``."""
    name, sep, url = value.partition("=")
    if sep and re.fullmatch(_NAME, name) and not re.match(r"^[a-z]+://", value):
        return CameraConfig(name=name, url=url)
    return CameraConfig(name=DEFAULT_CAMERA, url=value)


class TlsConfig(Record):
    ca_file: Path | None = field(None, description="CA certificate that signed the broker's certificate")
    cert_file: Path | None = field(None, description="client certificate (mutual TLS)")
    key_file: Path | None = field(None, description="client private key (mutual TLS)")
    insecure: bool = field(False, description="skip the broker hostname check (testing only)")

    def check(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name} not found: {path}")


def _broker_url(v: str) -> None:
    u = urlparse(v)
    if u.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not u.hostname:
        raise ValueError(f"{v!r} is not a broker URL: use mqtt://host:port or mqtts://host:port")


class MqttConfig(Record):
    url: str = field("mqtt://127.0.0.1:1883", description="broker: mqtt://host:port or mqtts://host:port",
                     check=_broker_url)
    topic_prefix: str = field("edgecv", description="topics are <prefix>/<device>/{counts,events,stats,status}")
    qos: Literal[0, 1] = field(1, description="MQTT QoS of counts and events")
    username: str | None = field(None, description="broker user name")
    password: str | None = field(None, description="broker password")
    client_id: str | None = field(None, description="default: edgecv-<device>")
    tls: TlsConfig | None = field(None, description="TLS settings (mqtts:// URLs use TLS without them too)")
    interval: float = field(10.0, gt=0, description="seconds between counts messages when nothing changes")
    keepalive: int = field(30, ge=5, le=3600, description="seconds between pings while idle")
    outbox: Path | None = field(None, description="folder of the on-disk queue (default ~/.cache/edgecv/outbox)")
    format: Literal["edgecv", "dlr"] = field(
        "edgecv", description="dlr: also publish aws.greengrass.DLRObjectDetection-shaped messages")
    dlr_topic: str = field("ml/dlr/object-detection", description="topic of the DLR-shaped messages")

    @property
    def host(self) -> str:
        return urlparse(self.url).hostname

    @property
    def port(self) -> int:
        u = urlparse(self.url)
        return u.port or (8883 if u.scheme in ("mqtts", "ssl") else 1883)

    @property
    def uses_tls(self) -> bool:
        return self.tls is not None or urlparse(self.url).scheme in ("mqtts", "ssl")


class HttpConfig(Record):
    listen: str | None = field(None, description="HOST:PORT of the web view (edgecv run --http overrides); off when unset")
    token: str | None = field(None, min_length=16, description="required on every request; mandatory when listening "
                              "beyond loopback (or set EDGECV_HTTP_TOKEN)")
    preview_fps: float = field(5.0, gt=0, le=30, description="most preview frames encoded per second, while watched")
    preview_width: int = field(960, ge=160, le=3840, description="preview frames are scaled down to this width")


class RunConfig(Record):
    device: str = field("edgecv", pattern=_NAME, description="device name in topics and messages")
    detect: DetectConfig = field(default_factory=DetectConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    counting: CountingConfig = field(default_factory=CountingConfig)
    sources: list[CameraConfig] = field(default_factory=list, description="the cameras this box counts, each with "
                                        "its own counts and topics, one detector shared by all; `edgecv run --source` "
                                        "replaces them")
    mqtt: MqttConfig | None = field(None, description="omit to run without publishing")
    stats_interval: float = field(10.0, gt=0, description="seconds between stats messages")
    streams: int = field(1, ge=1, le=16, description="frames detected at once, each by its own model instance "
                         "with its share of the cores: more frames/s, more memory (docs/performance.md)")
    http: HttpConfig = field(default_factory=HttpConfig, description="the installer's web view")
    state: Path | None = field(None, description="folder of the file that keeps the counting totals across restarts "
                               "(<device>.totals.json); default: the folder of mqtt.outbox, else ~/.cache/edgecv/state")

    def check(self) -> None:
        names = [c.name for c in self.sources]
        if len(names) != len(set(names)):
            raise ValueError(f"camera names in sources must be unique, got {names}")

    def counting_of(self, camera: CameraConfig) -> CountingConfig:
        """A camera's counting: its own, or the top-level one."""
        return camera.counting if camera.counting is not None else self.counting

    def with_sources(self, sources: list[CameraConfig]) -> "RunConfig":
        """This configuration counting ``sources`` (cameras given on the command line), or as it is when empty."""
        return self.replace(sources=sources) if sources else self


def parse_config(data: dict | None, origin: str = "configuration") -> RunConfig:
    try:
        return RunConfig.parse(data or {})
    except Invalid as exc:
        raise ConfigError(f"invalid {origin}: {exc}", "fix the keys named above (see config.example.yaml)") from None


def load_config(path: Path | None, overrides: dict | None = None) -> RunConfig:
    """Read a YAML file (optional) and apply CLI overrides (dotted keys: ``{"mqtt.url": ...}``)."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}", "pass an existing YAML file to --config")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{path} is not valid YAML{where}", "fix the syntax") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a mapping of keys", "see config.example.yaml")
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[leaf] = value
    return parse_config(data, str(path) if path else "options")
