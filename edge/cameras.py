"""One camera of a box: its source, tracker, counter and statistics, and the record of each frame it counts.

The detector is the box's (shared by all its cameras); what a camera sees is its own: its tracks (ids unique in
the box), its line and zones, its totals. ``Camera.step`` turns one frame's detections into a ``FrameRecord``,
the one record the sinks get.
"""
from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field

from edgecv.edge.config import CameraConfig, RunConfig
from edgecv.edge.counting import Counter, Counts, GroupMap
from edgecv.edge.detections import Detections
from edgecv.edge.sources import Frame, Source
from edgecv.edge.stats import LoopStats
from edgecv.edge.tracker import IouTracker


@dataclass(frozen=True)
class FrameRecord:
    """One frame after tracking and counting: what every sink is handed."""
    camera: "Camera"          # who saw it (its name, configuration, statistics)
    frame: Frame
    detections: Detections    # all the detector kept (the tracker's second pass included)
    tracked: Detections       # the confirmed tracks, with ids
    counts: Counts
    events: list[dict] = field(default_factory=list)


class Camera:
    def __init__(self, spec: CameraConfig, source: Source, run: RunConfig, groups: GroupMap,
                 ids: itertools.count | None = None, classifier=None):
        self.spec, self.source, self.name = spec, source, spec.name
        self.run = run
        self.groups = groups
        self.counting = run.counting_of(spec)
        self.tracker = IouTracker(run.tracker, high_score=run.detect.score_threshold,
                                  **({"ids": ids} if ids is not None else {}))
        self.counter = Counter(self.counting, groups, max_gap=run.tracker.max_age)
        self.classifier = classifier
        self.stats = LoopStats()
        self.counts: Counts | None = None
        self.last_frame: Frame | None = None
        self.stop = threading.Event()     # set when this camera is done (its end, max_frames, the loop's stop)
        self.reader_cpu_s = 0.0           # CPU time of its reader thread (decoding, preprocessing)

    def reconfigure(self, run: RunConfig, groups: GroupMap) -> None:
        """New thresholds, tracker settings and counting (totals of lines and zones of the same names carry
        over); the source stays."""
        spec = next((c for c in run.sources if c.name == self.name), self.spec)
        self.run, self.spec, self.groups = run, spec, groups
        self.counting = run.counting_of(spec)
        self.tracker.configure(run.tracker, high_score=run.detect.score_threshold)
        self.counter = Counter(self.counting, groups, previous=self.counter, max_gap=run.tracker.max_age)

    def step(self, frame: Frame, detections: Detections, latency: float = 0.0) -> FrameRecord:
        """Track and count one frame's detections (``latency``: seconds the detector took)."""
        self.stats.frame(latency)
        tracked = self.tracker.update(detections)
        h, w = frame.image.shape[:2]
        goods_types = None
        if self.classifier is not None:
            goods = self.groups.groups(tracked.class_ids) == "goods"
            goods_types = self.classifier.update(frame.image, tracked, goods, frame.index)
        self.counts, events = self.counter.update(tracked, (w, h), goods_types, frame.timestamp)
        self.last_frame = frame
        return FrameRecord(self, frame, detections, tracked, self.counts, events)

    @property
    def dropped(self) -> int:
        return self.source.dropped

    @property
    def errors(self) -> int:
        return self.stats.errors + self.source.errors

    def snapshot(self, reset: bool = True) -> dict:
        """This camera's statistics for the stats message."""
        out = self.stats.snapshot(self.source.dropped, 0, reset=reset)
        out.pop("queued")
        out["errors"] = self.errors
        out["connected"] = bool(getattr(self.source, "connected", True))
        return out
