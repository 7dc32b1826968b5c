"""Counting: small stateful objects with ``update(tracked detections) -> ...``, like supervision's zones.

- ``GroupMap``: model class -> people | goods | ignore.
- ``LineCounter``: people in/out across a door line, per track, with hysteresis, from the track's path.
- ``ZoneCounter``: the tracks whose anchor is in a polygon, with inertia, dwell time and enter/leave events.
- ``Counter``: all of the above for one camera's frame -> ``Counts`` + events; ``totals`` to keep across restarts.

The rules, precisely (docs/counting.md says the same for users):

- Only tracks the tracker has confirmed (``tracker.min_hits`` frames) reach the counters.
- A track's *anchor* is one point of its box: its bottom centre (the feet) by default for people.
- Line: a track is *committed* to a side once its anchor is at least ``hysteresis`` (a fraction of the frame's
  diagonal) from the line on that side. A crossing is counted when a track committed to one side is next
  committed to the other and the segment between those two anchors passes through the line segment A-B. So a
  box jittering on the line (never far enough on both sides) counts nothing, and a track that jumps over the
  line between two frames (low fps) counts once. Direction: towards ``in_side`` is ``in``.
- A track id not seen for more than ``max_gap`` frames (the tracker's ``max_age``: it has ended) starts afresh if
  it comes back, so a re-used id carries no old position into a phantom crossing.
- Zone: a track enters after its anchor was inside for ``inertia`` frames in a row and leaves after it was
  outside for ``inertia`` frames in a row, or was not seen for more than ``max_gap`` frames. Its dwell time runs
  from the first of its entering frames to the first of its leaving frames (or its last frame seen).
"""
from __future__ import annotations

import statistics
from collections import Counter as _Tally
from collections import deque
from dataclasses import dataclass, field
from importlib import resources

import numpy as np
import yaml

from edgecv.edge.config import CountingConfig, LineConfig, ZoneConfig
from edgecv.edge.detections import Detections

GROUPS = ("people", "goods", "ignore")
DEFAULT_MAX_GAP = 15  # TrackerConfig.max_age's default


class GroupMap:
    """Class id -> group, from the model's default map (models/classes/<name>.yaml) plus overrides."""

    def __init__(self, classes: tuple[str, ...], default_map: str | None, overrides: dict[str, str] | None = None):
        mapping: dict[str, str] = {}
        if default_map:
            data = yaml.safe_load(resources.files("edgecv.models").joinpath(f"classes/{default_map}.yaml").read_text())
            for group in ("people", "goods"):
                mapping.update({name: group for name in data.get(group, [])})
        mapping.update(overrides or {})
        self.classes = classes
        self.group_of = np.array([mapping.get(name, "ignore") for name in classes] + ["ignore"], dtype=object)

    def groups(self, class_ids: np.ndarray) -> np.ndarray:
        ids = np.where((class_ids >= 0) & (class_ids < len(self.classes)), class_ids, len(self.classes))
        return self.group_of[ids]

    def name(self, class_id: int) -> str:
        return self.classes[class_id] if 0 <= class_id < len(self.classes) else f"class{class_id}"


def anchors(boxes: np.ndarray, anchor: str) -> np.ndarray:
    """(N, 2) points of (N, 4) boxes: ``bottom_center``, ``center`` or ``top_center``."""
    x = (boxes[:, 0] + boxes[:, 2]) / 2
    y = {"bottom_center": boxes[:, 3], "top_center": boxes[:, 1]}.get(anchor)
    return np.stack([x, (boxes[:, 1] + boxes[:, 3]) / 2 if y is None else y], axis=1)


def _side(a: np.ndarray, b: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Sign of the cross product (B - A) x (P - A): > 0 left of A->B in image coordinates (y down)."""
    return np.sign((b[0] - a[0]) * (p[..., 1] - a[1]) - (b[1] - a[1]) * (p[..., 0] - a[0]))


def _reaches_line(a, b, p, q) -> bool:
    """Does the step P->Q touch the finite segment A-B (ends included)? (P and Q on opposite sides of A-B.)"""
    return _side(p, q, a) * _side(p, q, b) <= 0


@dataclass
class _Passage:
    """Where a track stands towards a line: the side it is committed to (0: none yet) and its anchor there."""
    side: float = 0.0
    point: np.ndarray | None = None
    seen: int = 0


def _tally_add(table: dict, name: str, key: str) -> None:
    table.setdefault(name, {"in": 0, "out": 0})[key] += 1


@dataclass
class LineCounter:
    config: LineConfig
    names: object = None          # class id -> name (GroupMap.name); None: "class<id>"
    max_gap: int = DEFAULT_MAX_GAP
    people_in: int = 0
    people_out: int = 0
    by_class: dict = field(default_factory=dict)  # class name -> {"in": n, "out": n}
    _tracks: dict = field(default_factory=dict)   # track id -> _Passage
    _updates: int = 0

    def update(self, tracked: Detections, frame_size: tuple[int, int]) -> list[dict]:
        """``tracked``: people detections with track ids. Returns crossing events."""
        if tracked.track_ids is None:
            raise ValueError("line crossings need track ids: run the tracker first")
        w, h = frame_size
        a, b = (np.asarray(p, float) * (w, h) for p in self.config.points)
        length = float(np.hypot(*(b - a)))
        band = self.config.hysteresis * float(np.hypot(w, h))
        # image y points down, so "left of A->B" as seen on screen is a negative cross product
        inside = -1.0 if self.config.in_side == "left" else 1.0
        self._updates += 1
        events = []
        points = anchors(tracked.boxes, self.config.anchor)
        distances = ((b[0] - a[0]) * (points[:, 1] - a[1]) - (b[1] - a[1]) * (points[:, 0] - a[0])) / length
        for tid, point, distance, cls in zip(tracked.track_ids.tolist(), points, distances.tolist(),
                                             tracked.class_ids.tolist()):
            passage = self._tracks.get(tid)
            if passage is None or self._updates - passage.seen > self.max_gap:  # new, or an id used again
                passage = self._tracks[tid] = _Passage()
            passage.seen = self._updates
            if abs(distance) <= band:
                continue  # on the line or too close to it: no side yet
            side = 1.0 if distance > 0 else -1.0
            crossed = passage.side not in (0.0, side) and _reaches_line(a, b, passage.point, point)
            passage.side, passage.point = side, point
            if not crossed:
                continue
            direction = "in" if side == inside else "out"
            if direction == "in":
                self.people_in += 1
            else:
                self.people_out += 1
            name = self.names(int(cls)) if self.names else f"class{int(cls)}"
            _tally_add(self.by_class, name, direction)
            events.append({"type": "line_crossing", "line": self.config.name, "direction": direction,
                           "track_id": int(tid), "class": name})
        if self._updates % 64 == 0:  # bounded memory: ended tracks go
            self._tracks = {t: p for t, p in self._tracks.items() if self._updates - p.seen <= self.max_gap}
        return events

    def totals(self) -> dict:
        return {"in": self.people_in, "out": self.people_out,
                "by_class": {name: dict(v) for name, v in sorted(self.by_class.items())}}

    def restore(self, totals: dict) -> None:
        self.people_in, self.people_out = int(totals.get("in", 0)), int(totals.get("out", 0))
        self.by_class = {str(k): {"in": int(v.get("in", 0)), "out": int(v.get("out", 0))}
                         for k, v in (totals.get("by_class") or {}).items()}


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Vectorised even-odd rule: (N, 2) points, (M, 2) polygon -> (N,) bool."""
    x, y = points[:, 0:1], points[:, 1:2]
    x1, y1 = polygon[:, 0], polygon[:, 1]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    crosses = ((y1 <= y) != (y2 <= y)) & (x < (x2 - x1) * (y - y1) / np.where(y2 == y1, 1e-12, y2 - y1) + x1)
    return (crosses.sum(axis=1) % 2) == 1


class Smoother:
    """Median of the last ``window`` values, rounded: one miss or one false hit doesn't flicker the count."""

    def __init__(self, window: int):
        self.values: deque[int] = deque(maxlen=window)

    def update(self, value: int) -> int:
        self.values.append(value)
        return int(round(statistics.median(self.values)))  # (numpy's median: 20x slower on a few values)


@dataclass
class _Member:
    """A track's membership of a zone: in or out, how many frames in a row it has looked otherwise (and since
    when), when it entered, when it was last seen."""
    name: str
    inside: bool = False
    streak: int = 0
    streak_since: float = 0.0
    entered_at: float = 0.0
    seen: int = 0
    seen_at: float = 0.0


@dataclass
class ZoneCounter:
    config: ZoneConfig
    inertia: int = 5
    names: object = None
    max_gap: int = DEFAULT_MAX_GAP
    entered: int = 0      # totals since the first start (kept across restarts)
    left: int = 0
    dwell_s_total: float = 0.0  # of the tracks that left
    _members: dict = field(default_factory=dict)  # track id -> _Member
    _updates: int = 0

    @property
    def count(self) -> int:
        return sum(m.inside for m in self._members.values())

    def by_class(self) -> dict[str, int]:
        return dict(sorted(_Tally(m.name for m in self._members.values() if m.inside).items()))

    def _event(self, kind: str, tid: int, member: _Member, **more) -> dict:
        return {"type": kind, "zone": self.config.name, "group": self.config.group, "track_id": int(tid),
                "class": member.name, **more}

    def _leave(self, tid: int, member: _Member, at: float) -> dict:
        member.inside = False
        dwell = max(0.0, at - member.entered_at)
        self.left += 1
        self.dwell_s_total += dwell
        return self._event("zone_leave", tid, member, dwell_s=round(dwell, 3))

    def update(self, detections: Detections, groups: np.ndarray, frame_size: tuple[int, int],
               ts: float = 0.0) -> list[dict]:
        w, h = frame_size
        self._updates += 1
        polygon = np.asarray(self.config.polygon, float) * (w, h)
        mine = detections[groups == self.config.group]
        anchor = self.config.anchor or ("bottom_center" if self.config.group == "people" else "center")
        inside = points_in_polygon(anchors(mine.boxes, anchor), polygon) if len(mine) else np.zeros(0, bool)
        before = self.count
        events: list[dict] = []
        ids = mine.track_ids.tolist() if mine.track_ids is not None else [-1 - i for i in range(len(mine))]
        for tid, now_inside, cls in zip(ids, inside.tolist(), mine.class_ids.tolist()):
            member = self._members.get(tid)
            if member is None or self._updates - member.seen > self.max_gap:
                name = self.names(int(cls)) if self.names else f"class{int(cls)}"
                member = self._members[tid] = _Member(name)
            member.seen, member.seen_at = self._updates, ts
            if now_inside == member.inside:
                member.streak = 0
                continue
            member.streak += 1
            if member.streak == 1:
                member.streak_since = ts
            if member.streak < self.inertia:
                continue
            member.streak = 0
            if now_inside:
                member.inside, member.entered_at = True, member.streak_since
                self.entered += 1
                events.append(self._event("zone_enter", tid, member))
            else:
                events.append(self._leave(tid, member, member.streak_since))
        for tid, member in list(self._members.items()):  # tracks the tracker has ended
            if self._updates - member.seen > self.max_gap:
                if member.inside:
                    events.append(self._leave(tid, member, member.seen_at))
                del self._members[tid]
        after = self.count
        if after != before:
            events.append({"type": "zone_change", "zone": self.config.name, "group": self.config.group,
                           "before": before, "after": after})
        return events

    def totals(self) -> dict:
        return {"entered": self.entered, "left": self.left, "dwell_s_total": round(self.dwell_s_total, 3)}

    def restore(self, totals: dict) -> None:
        self.entered, self.left = int(totals.get("entered", 0)), int(totals.get("left", 0))
        self.dwell_s_total = float(totals.get("dwell_s_total", 0.0))

    def carry(self, previous: "ZoneCounter") -> None:
        """Go on from the zone this one replaces (same name): totals and the tracks inside."""
        self.restore(previous.totals())
        self._members, self._updates = previous._members, previous._updates


@dataclass(frozen=True)
class Counts:
    people: int
    goods: int
    by_class: dict[str, int]
    people_in: int
    people_out: int
    zones: dict[str, int]
    goods_types: dict[str, int] = field(default_factory=dict)  # crop classifier label -> goods in frame
    lines: dict[str, dict] = field(default_factory=dict)   # line -> {"in", "out", "by_class": {class: {in, out}}}
    zone_detail: dict[str, dict] = field(default_factory=dict)  # zone -> {"by_class", "entered", "left", ...}

    def key(self) -> tuple:
        """What 'changed' means for publishing on change."""
        return (self.people, self.goods, tuple(sorted(self.by_class.items())), self.people_in, self.people_out,
                tuple(sorted(self.zones.items())), tuple(sorted(self.goods_types.items())),
                repr(sorted(self.zone_detail.items())), repr(sorted(self.lines.items())))


class Counter:
    """Everything counted from one camera's tracked detections, frame by frame."""

    def __init__(self, config: CountingConfig, groups: GroupMap, previous: "Counter | None" = None,
                 max_gap: int = DEFAULT_MAX_GAP):
        """``previous``: the counter this one replaces after a configuration change; totals carry over
        (people in/out of a line of the same name, a zone of the same name with the tracks in it). ``max_gap``:
        frames after which a track not seen has ended (the tracker's ``max_age``)."""
        self.config = config
        self.groups = groups
        self._people = Smoother(config.window)
        self._goods = Smoother(config.window)
        self.line = LineCounter(config.line, groups.name, max_gap) if config.line else None
        self.zones = [ZoneCounter(z, config.inertia, groups.name, max_gap) for z in config.zones]
        if previous is not None:
            old_line = previous.line
            if self.line is not None and old_line is not None and old_line.config.name == self.line.config.name:
                self.line.restore(old_line.totals())
                self.line._tracks, self.line._updates = old_line._tracks, old_line._updates
            kept = {z.config.name: z for z in previous.zones}
            for zone in self.zones:
                if zone.config.name in kept:
                    zone.carry(kept[zone.config.name])

    def update(self, tracked: Detections, frame_size: tuple[int, int],
               goods_types: dict[int, str] | None = None, ts: float = 0.0) -> tuple[Counts, list[dict]]:
        """``goods_types``: track id -> label from the crop classifier, if one runs; ``ts``: the frame's time
        (seconds), for dwell times."""
        groups = self.groups.groups(tracked.class_ids)
        events: list[dict] = []
        if self.line is not None:
            events += self.line.update(tracked[groups == "people"], frame_size)
        for zone in self.zones:
            events += zone.update(tracked, groups, frame_size, ts)
        return self.counts(tracked, groups, goods_types), events

    def counts(self, tracked: Detections, groups: np.ndarray, goods_types: dict[int, str] | None = None) -> Counts:
        tally = _Tally(self.groups.name(int(c)) for c, g in zip(tracked.class_ids, groups) if g != "ignore")
        return Counts(people=self._people.update(int(np.sum(groups == "people"))),
                      goods=self._goods.update(int(np.sum(groups == "goods"))),
                      by_class=dict(sorted(tally.items())),
                      people_in=self.line.people_in if self.line else 0,
                      people_out=self.line.people_out if self.line else 0,
                      zones={z.config.name: z.count for z in self.zones},
                      goods_types=dict(sorted(_Tally((goods_types or {}).values()).items())),
                      lines={self.line.config.name: self.line.totals()} if self.line else {},
                      zone_detail={z.config.name: {"by_class": z.by_class(), **z.totals()} for z in self.zones})

    def totals(self) -> dict:
        """What is kept across reconnects and restarts: line and zone totals, by name."""
        return {"lines": {self.line.config.name: self.line.totals()} if self.line else {},
                "zones": {z.config.name: z.totals() for z in self.zones}}

    def restore(self, totals: dict) -> None:
        """Start from ``totals`` (as ``totals()`` gave them): lines and zones of the same names."""
        lines, zones = totals.get("lines") or {}, totals.get("zones") or {}
        if self.line is not None and self.line.config.name in lines:
            self.line.restore(lines[self.line.config.name])
        for zone in self.zones:
            if zone.config.name in zones:
                zone.restore(zones[zone.config.name])
