"""Match two sets of detections of one image (same class, IoU above a threshold), greedily by score."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgecv.edge.detections import Detections
from edgecv.edge.nms import box_iou


@dataclass(frozen=True)
class Match:
    pairs: np.ndarray          # (K, 2) index into a, index into b
    unmatched_a: np.ndarray    # indices into a
    unmatched_b: np.ndarray    # indices into b


def match(a: Detections, b: Detections, iou_threshold: float = 0.5) -> Match:
    iou = box_iou(a.boxes, b.boxes) if len(a) and len(b) else np.zeros((len(a), len(b)))
    iou = np.where(a.class_ids[:, None] == b.class_ids[None, :], iou, 0.0)
    taken = np.zeros(len(b), bool)
    pairs = []
    for i in np.argsort(-a.scores, kind="stable"):
        candidates = np.where(taken, -1.0, iou[i])
        j = int(np.argmax(candidates)) if len(b) else -1
        if j >= 0 and candidates[j] >= iou_threshold:
            taken[j] = True
            pairs.append((i, j))
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    return Match(pairs, np.setdiff1d(np.arange(len(a)), pairs[:, 0]), np.flatnonzero(~taken))
