"""The wire format, in one place: counts, events and stats as versioned JSON (schemas beside this file).

Every message carries ``seq``, the position in this device's outbox: strictly increasing across
restarts, so a consumer can order messages and drop duplicates (QoS 1 delivers at least once).
"""
from __future__ import annotations

import datetime as _dt
import json

from edgecv.edge.counting import Counts
from edgecv.edge.detections import Detections

COUNTS_SCHEMA = "edgecv.counts/2"
BOX_COUNTS_SCHEMA = "edgecv.box-counts/1"
EVENT_SCHEMA = "edgecv.event/2"
STATS_SCHEMA = "edgecv.stats/2"
SCHEMA_FILES = {COUNTS_SCHEMA: "counts.schema.json", BOX_COUNTS_SCHEMA: "box-counts.schema.json",
                EVENT_SCHEMA: "event.schema.json", STATS_SCHEMA: "stats.schema.json"}


def iso_utc(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def counts_message(device: str, camera: str, model: str, frame: int, ts: float, counts: Counts) -> dict:
    """One camera's counts (topic ``<prefix>/<device>/<camera>/counts``)."""
    return {"schema": COUNTS_SCHEMA, "device": device, "camera": camera, "ts": iso_utc(ts), "frame": frame,
            "model": model, "counts": {"people": counts.people, "goods": counts.goods}, "by_class": counts.by_class,
            "people_in": counts.people_in, "people_out": counts.people_out, "zones": counts.zones,
            "goods_types": counts.goods_types, "lines": counts.lines, "zone_detail": counts.zone_detail}


def box_counts_message(device: str, model: str, ts: float, cameras: dict[str, tuple[int, Counts]]) -> dict:
    """The box's counts (topic ``<prefix>/<device>/counts``): per camera (name -> (frame, counts)) and summed."""
    per_camera = {name: {"frame": frame, "people": c.people, "goods": c.goods, "people_in": c.people_in,
                         "people_out": c.people_out, "zones": c.zones}
                  for name, (frame, c) in sorted(cameras.items())}
    totals = {key: sum(v[key] for v in per_camera.values()) for key in ("people", "goods", "people_in", "people_out")}
    return {"schema": BOX_COUNTS_SCHEMA, "device": device, "ts": iso_utc(ts), "model": model, "totals": totals,
            "cameras": per_camera}


def event_message(device: str, camera: str, model: str, frame: int, ts: float, event: dict) -> dict:
    return {"schema": EVENT_SCHEMA, "device": device, "camera": camera, "ts": iso_utc(ts), "frame": frame,
            "model": model, **event}


def stats_message(device: str, ts: float, stats: dict, cameras: dict[str, dict], sink_errors: dict[str, int]) -> dict:
    """The box's stats: ``stats`` over all cameras (frames, fps, latency, dropped, errors, queued), each camera's,
    and the failures of each sink."""
    return {"schema": STATS_SCHEMA, "device": device, "ts": iso_utc(ts), **stats, "cameras": cameras,
            "sink_errors": sink_errors}


def dlr_message(ts: float, detections: Detections, names, top: int = 5, threshold: float = 0.3) -> dict:
    """The message shape of AWS's ``aws.greengrass.DLRObjectDetection`` (``ml/dlr/object-detection``),
    string-typed fields included, so consumers written for it keep working."""
    order = [i for i in detections.scores.argsort()[::-1] if detections.scores[i] >= threshold][:top]
    return {"timestamp": iso_utc(ts), "inference-type": "object-detection",
            "inference-description": f"Top {top} predictions with score {threshold} or above ",
            "inference-results": [{"Label": names(int(detections.class_ids[i])),
                                   "Score": f"{float(detections.scores[i]):.4f}",
                                   "Box": json.dumps([round(float(v), 1) for v in detections.boxes[i]])}
                                  for i in order]}


def encode(message: dict) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()
