"""Vectorised non-maximum suppression, per class (GluonCV ``box_nms`` with force_suppress=False)."""
from __future__ import annotations

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4): (N, M)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou_threshold: float,
        topk: int = -1, max_output: int = -1) -> np.ndarray:
    """Indices kept, best score first. Boxes of different classes never suppress each other.

    ``topk`` candidates (by score) enter NMS; at most ``max_output`` come out (-1: no limit).
    """
    order = np.argsort(-scores, kind="stable")
    if topk > 0:
        order = order[:topk]
    if order.size == 0:
        return order
    b = boxes[order].astype(np.float64)
    # Offsetting each class into its own region makes one IoU matrix serve every class.
    span = float(np.abs(b).max()) * 2 + 1
    b = b + (class_ids[order].astype(np.float64) * span)[:, None]
    iou = box_iou(b, b)
    suppressed = np.zeros(order.size, bool)
    keep = []
    for i in range(order.size):
        if suppressed[i]:
            continue
        keep.append(i)
        if 0 < max_output <= len(keep):
            break
        suppressed |= iou[i] > iou_threshold
    return order[np.asarray(keep, np.int64)]
