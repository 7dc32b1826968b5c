"""Counting: small stateful objects with ``update(detections) -> ...``, like supervision's zones.

- ``GroupMap``: model class -> people | goods | ignore.
- ``LineCounter``: people in/out across a door line (needs track ids: crossings are per track).
- ``ZoneCounter``: objects of a group whose centre lies in a polygon, smoothed, with change events.
- ``Counter``: all of the above for one frame -> ``Counts`` + events.
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


def _side(a: np.ndarray, b: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Sign of the cross product (B - A) x (P - A): > 0 left of A->B in image coordinates (y down)."""
    return np.sign((b[0] - a[0]) * (p[..., 1] - a[1]) - (b[1] - a[1]) * (p[..., 0] - a[0]))


def _reaches_line(a, b, p, q) -> bool:
    """Does the step P->Q touch the finite segment A-B (ends included)?"""
    return _side(p, q, a) * _side(p, q, b) <= 0


@dataclass
class LineCounter:
    config: LineConfig
    people_in: int = 0
    people_out: int = 0
    forget_after: int = 300  # updates after which a track's last position is dropped (bounded memory)
    _last: dict[int, tuple[np.ndarray, float, int]] = field(default_factory=dict)  # point, side, update
    _updates: int = 0

    def update(self, tracked: Detections, frame_size: tuple[int, int]) -> list[dict]:
        """``tracked``: people detections with track ids. Returns crossing events."""
        if tracked.track_ids is None:
            raise ValueError("line crossings need track ids: run the tracker first")
        w, h = frame_size
        a, b = (np.asarray(p, float) * (w, h) for p in self.config.points)
        # image y points down, so "left of A->B" as seen on screen is a negative cross product
        inside = -1.0 if self.config.in_side == "left" else 1.0
        events = []
        centres = (tracked.boxes[:, :2] + tracked.boxes[:, 2:]) / 2
        self._updates += 1
        for tid, centre in zip(tracked.track_ids.tolist(), centres):
            side = float(_side(a, b, centre))
            prev = self._last.get(tid)
            # a point on the line keeps the side it came from: touching and turning back is no crossing
            self._last[tid] = (centre, side or (prev[1] if prev else 0.0), self._updates)
            if prev is None or side == 0 or prev[1] in (0.0, side) or not _reaches_line(a, b, prev[0], centre):
                continue
            direction = "in" if side == inside else "out"
            if direction == "in":
                self.people_in += 1
            else:
                self.people_out += 1
            events.append({"type": "line_crossing", "line": self.config.name, "direction": direction,
                           "track_id": int(tid)})
        if self._updates % 64 == 0:
            self._last = {t: v for t, v in self._last.items() if self._updates - v[2] <= self.forget_after}
        return events


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
class ZoneCounter:
    config: ZoneConfig
    window: int
    count: int = 0

    def __post_init__(self):
        self._smooth = Smoother(self.window)

    def update(self, detections: Detections, groups: np.ndarray, frame_size: tuple[int, int]) -> list[dict]:
        w, h = frame_size
        polygon = np.asarray(self.config.polygon, float) * (w, h)
        mine = detections.boxes[groups == self.config.group]
        centres = (mine[:, :2] + mine[:, 2:]) / 2
        raw = int(points_in_polygon(centres, polygon).sum()) if len(mine) else 0
        before, self.count = self.count, self._smooth.update(raw)
        if self.count != before:
            return [{"type": "zone_change", "zone": self.config.name, "group": self.config.group,
                     "before": before, "after": self.count}]
        return []


@dataclass(frozen=True)
class Counts:
    people: int
    goods: int
    by_class: dict[str, int]
    people_in: int
    people_out: int
    zones: dict[str, int]
    goods_types: dict[str, int] = field(default_factory=dict)  # crop classifier label -> goods in frame

    def key(self) -> tuple:
        """What 'changed' means for publishing on change."""
        return (self.people, self.goods, tuple(sorted(self.by_class.items())), self.people_in, self.people_out,
                tuple(sorted(self.zones.items())), tuple(sorted(self.goods_types.items())))


class Counter:
    """Everything counted from one frame's tracked detections."""

    def __init__(self, config: CountingConfig, groups: GroupMap, previous: "Counter | None" = None):
        """``previous``: the counter this one replaces after a configuration change; totals carry over
        (people in/out of a line of the same name, the count of a zone of the same name)."""
        self.config = config
        self.groups = groups
        self._people = Smoother(config.window)
        self._goods = Smoother(config.window)
        self.line = LineCounter(config.line) if config.line else None
        self.zones = [ZoneCounter(z, config.window) for z in config.zones]
        if previous is not None:
            old_line = previous.line
            if self.line is not None and old_line is not None and old_line.config.name == self.line.config.name:
                self.line.people_in, self.line.people_out = old_line.people_in, old_line.people_out
            kept = {z.config.name: z.count for z in previous.zones}
            for zone in self.zones:
                zone.count = kept.get(zone.config.name, 0)

    def update(self, tracked: Detections, frame_size: tuple[int, int],
               goods_types: dict[int, str] | None = None) -> tuple[Counts, list[dict]]:
        """``goods_types``: track id -> label from the crop classifier, if one runs."""
        groups = self.groups.groups(tracked.class_ids)
        events: list[dict] = []
        if self.line is not None:
            events += self.line.update(tracked[groups == "people"], frame_size)
        for zone in self.zones:
            events += zone.update(tracked, groups, frame_size)
        tally = _Tally(self.groups.name(int(c)) for c, g in zip(tracked.class_ids, groups) if g != "ignore")
        counts = Counts(people=self._people.update(int(np.sum(groups == "people"))),
                        goods=self._goods.update(int(np.sum(groups == "goods"))),
                        by_class=dict(sorted(tally.items())),
                        people_in=self.line.people_in if self.line else 0,
                        people_out=self.line.people_out if self.line else 0,
                        zones={z.config.name: z.count for z in self.zones},
                        goods_types=dict(sorted(_Tally((goods_types or {}).values()).items())))
        return counts, events
