"""Track ids across frames: IoU association in two passes, as ByteTrack does.

High-score detections are matched to tracks first; low-score ones then rescue tracks that would
otherwise be lost (an occluded person keeps their id). Tracks unseen for ``max_age`` frames end.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from edgecv.edge.config import TrackerConfig
from edgecv.edge.detections import Detections
from edgecv.edge.nms import box_iou


@dataclass
class _Track:
    id: int
    box: np.ndarray
    class_id: int
    hits: int = 1
    age: int = 0  # frames since last matched


def _greedy(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Pairs (row, col) by descending IoU, each row and column used once."""
    pairs: list[tuple[int, int]] = []
    if iou.size == 0:
        return pairs
    rows, cols = np.nonzero(iou >= threshold)
    order = np.argsort(-iou[rows, cols], kind="stable")
    used_rows, used_cols = set(), set()
    for r, c in zip(rows[order].tolist(), cols[order].tolist()):
        if r not in used_rows and c not in used_cols:
            pairs.append((r, c))
            used_rows.add(r)
            used_cols.add(c)
    return pairs


@dataclass
class IouTracker:
    config: TrackerConfig = field(default_factory=TrackerConfig)
    high_score: float = 0.5
    ids: itertools.count = field(default_factory=lambda: itertools.count(1))  # shared by the cameras of a box:
    _tracks: list[_Track] = field(default_factory=list)                     # an id means one track in the box

    def configure(self, config: TrackerConfig, high_score: float) -> None:
        """New thresholds for the next frames; live tracks keep their ids."""
        self.config, self.high_score = config, high_score

    def update(self, detections: Detections) -> Detections:
        """Returns the detections that belong to confirmed tracks, with their ``track_ids``."""
        ids = np.full(len(detections), -1, np.int64)
        unmatched_tracks = list(range(len(self._tracks)))
        for mask in (detections.scores >= self.high_score,
                     (detections.scores < self.high_score) & (detections.scores >= self.config.low_score)):
            det_idx = np.flatnonzero(mask)
            if not len(det_idx) or not unmatched_tracks:
                continue
            track_boxes = np.stack([self._tracks[t].box for t in unmatched_tracks])
            iou = box_iou(track_boxes, detections.boxes[det_idx])
            track_classes = np.array([self._tracks[t].class_id for t in unmatched_tracks])
            same = track_classes[:, None] == detections.class_ids[det_idx][None, :]
            matched = set()
            for r, c in _greedy(np.where(same, iou, 0.0), self.config.iou_threshold):
                track = self._tracks[unmatched_tracks[r]]
                d = det_idx[c]
                track.box, track.hits, track.age = detections.boxes[d], track.hits + 1, 0
                ids[d] = track.id
                matched.add(r)
            unmatched_tracks = [t for i, t in enumerate(unmatched_tracks) if i not in matched]
        for t in unmatched_tracks:
            self._tracks[t].age += 1
        for d in np.flatnonzero((ids < 0) & (detections.scores >= self.high_score)):
            ids[d] = next(self.ids)
            self._tracks.append(_Track(int(ids[d]), detections.boxes[d], int(detections.class_ids[d])))
        self._tracks = [t for t in self._tracks if t.age <= self.config.max_age]
        confirmed = {t.id for t in self._tracks if t.hits >= self.config.min_hits}
        keep = np.array([i in confirmed for i in ids], bool)
        return detections[keep].with_tracks(ids[keep])
