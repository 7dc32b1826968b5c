"""Raw model outputs -> ``Detections``: one decoder per output format, named in the manifest.

The same code serves the edge loop and the compile step's verification, so "compiled = source"
is checked through the decoding the box actually runs.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np

from edgecv.edge.anchors import center_priors, ssd_anchors
from edgecv.edge.artifact import DecodeSpec, GflOptions, SsdAnchorOptions
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


@lru_cache(maxsize=8)
def _anchors(options: SsdAnchorOptions) -> np.ndarray:
    return ssd_anchors(options)


def _ssd_anchors(outputs: dict[str, np.ndarray], spec: DecodeSpec) -> Candidates:
    """(1, A, 4) box encodings (yc, xc, h, w against the anchors, scaled) and (1, A, C) class scores; only the
    candidates above the threshold are decoded. Boxes in input pixels."""
    options = spec.ssd
    scores = outputs["scores"][0]
    anchor, cls = np.nonzero(scores > spec.score_threshold)
    a = _anchors(options)[anchor].astype(np.float64)
    e = outputs["box_encodings"][0][anchor].astype(np.float64)
    sy, sx, sh, sw = options.box_scales
    xc = e[:, 1] / sx * a[:, 2] + a[:, 0]
    yc = e[:, 0] / sy * a[:, 3] + a[:, 1]
    half_w = np.exp(e[:, 3] / sw) * a[:, 2] / 2
    half_h = np.exp(e[:, 2] / sh) * a[:, 3] / 2
    height, width = options.input_size
    boxes = np.stack([(xc - half_w) * width, (yc - half_h) * height, (xc + half_w) * width, (yc + half_h) * height], 1)
    return boxes, scores[anchor, cls], cls


@lru_cache(maxsize=8)
def _priors(options: GflOptions) -> np.ndarray:
    return center_priors(options.input_size, options.strides, options.center_offset)


def _gfl(outputs: dict[str, np.ndarray], spec: DecodeSpec) -> Candidates:
    """(1, P, C) class scores and (1, P, 4 * (reg_max + 1)) side distributions (left, top, right, bottom) per
    prior point: distance = softmax expectation over the bins times the stride. Boxes in input pixels."""
    options = spec.gfl
    scores = outputs["scores"][0]
    point, cls = np.nonzero(scores > spec.score_threshold)
    p = _priors(options)[point].astype(np.float64)
    logits = outputs["box_distribution"][0][point].reshape(len(point), 4, options.reg_max + 1).astype(np.float64)
    weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
    distance = (weights @ np.arange(options.reg_max + 1)) / weights.sum(axis=-1) * p[:, 2:3]
    boxes = np.concatenate([p[:, :2] - distance[:, :2], p[:, :2] + distance[:, 2:]], axis=1)
    return boxes, scores[point, cls], cls


DETECTION_DECODERS: dict[str, Callable[[dict, DecodeSpec], Candidates]] = {
    "boxes_scores": _boxes_scores,
    "id_score_box": _id_score_box,
    "ssd_anchors": _ssd_anchors,
    "gfl": _gfl,
}


def decode_detections(outputs: dict[str, np.ndarray], spec: DecodeSpec,
                      to_frame: Callable[[np.ndarray], np.ndarray] | None = None, **frame) -> Detections:
    """Threshold, NMS per class and cap; boxes in input pixels, or mapped by ``to_frame`` (e.g.
    ``Placement.to_frame``) once the survivors are known."""
    boxes, scores, class_ids = DETECTION_DECODERS[spec.kind](outputs, spec)
    keep = nms(boxes, scores, class_ids, spec.nms_iou, topk=spec.nms_topk, max_output=spec.max_detections)
    boxes = boxes[keep]
    return Detections(boxes.astype(np.float32) if to_frame is None else to_frame(boxes),
                      scores[keep].astype(np.float32), class_ids[keep].astype(np.int64), **frame)


def top_classes(probabilities: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Classification: the ``k`` best class ids and their probabilities, best first."""
    p = probabilities.reshape(-1)
    ids = np.argsort(-p, kind="stable")[:k]
    return ids, p[ids]
