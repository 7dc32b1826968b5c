"""Raw model outputs -> ``Detections``: one decoder per output format, named in the manifest.

The same code serves the edge loop and the compile step's verification, so "compiled = source"
is checked through the decoding the box actually runs.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from edgecv.edge.artifact import DecodeSpec
from edgecv.edge.detections import Detections
from edgecv.edge.nms import nms

Candidates = tuple[np.ndarray, np.ndarray, np.ndarray]  # boxes (N,4), scores (N,), class ids (N,)


def _boxes_scores(outputs: dict[str, np.ndarray], spec: DecodeSpec) -> Candidates:
    """(1, A, 4) boxes shared by all classes and (1, A, C) per-class scores."""
    boxes, scores = outputs["boxes"][0], outputs["scores"][0]
    anchor, cls = np.nonzero(scores > spec.score_threshold)
    return boxes[anchor], scores[anchor, cls], cls


def _id_score_box(outputs: dict[str, np.ndarray], spec: DecodeSpec) -> Candidates:
    """(1, N, 6) rows of class id, score, x1, y1, x2, y2 (GluonCV's pre-NMS layout)."""
    rows = outputs["detections"][0]
    keep = (rows[:, 1] > spec.score_threshold) & (rows[:, 0] >= 0)
    rows = rows[keep]
    return rows[:, 2:6], rows[:, 1], rows[:, 0].astype(np.int64)


DETECTION_DECODERS: dict[str, Callable[[dict, DecodeSpec], Candidates]] = {
    "boxes_scores": _boxes_scores,
    "id_score_box": _id_score_box,
}


def decode_detections(outputs: dict[str, np.ndarray], spec: DecodeSpec, **frame) -> Detections:
    """Threshold, NMS per class and cap, in input pixels (map with ``Placement.to_frame``)."""
    boxes, scores, class_ids = DETECTION_DECODERS[spec.kind](outputs, spec)
    keep = nms(boxes, scores, class_ids, spec.nms_iou, topk=spec.nms_topk, max_output=spec.max_detections)
    return Detections(boxes[keep].astype(np.float32), scores[keep].astype(np.float32),
                      class_ids[keep].astype(np.int64), **frame)


def top_classes(probabilities: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Classification: the ``k`` best class ids and their probabilities, best first."""
    p = probabilities.reshape(-1)
    ids = np.argsort(-p, kind="stable")[:k]
    return ids, p[ids]
