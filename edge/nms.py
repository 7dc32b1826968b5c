"""Vectorised non-maximum suppression, per class (GluonCV ``box_nms`` with force_suppress=False)."""
from __future__ import annotations

import numpy as np

BLOCK = 256  # candidates whose suppression rows are computed together


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4): (N, M). One coordinate at a time: no
    (N, M, 2) temporaries of corner pairs, the same values."""
    ax1, ay1, ax2, ay2 = (a[:, k, None] for k in range(4))
    bx1, by1, bx2, by2 = b.T
    inter = (np.maximum(np.minimum(ax2, bx2) - np.maximum(ax1, bx1), 0)
             * np.maximum(np.minimum(ay2, by2) - np.maximum(ay1, by1), 0))
    area_a = np.maximum(ax2 - ax1, 0) * np.maximum(ay2 - ay1, 0)
    area_b = np.maximum(bx2 - bx1, 0) * np.maximum(by2 - by1, 0)
    union = area_a + area_b - inter
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
    # IoU per block, then one OR per kept box, instead of one IoU row per kept box. Blocks bound the memory at
    # BLOCK x N whatever the number of candidates.
    removed = np.zeros(order.size, bool)
    keep = []
    for start in range(0, order.size, BLOCK):
        rows = slice(start, min(start + BLOCK, order.size))
        suppresses = box_iou(b[rows], b) > iou_threshold
        for i in range(rows.start, rows.stop):
            if removed[i]:
                continue
            keep.append(i)
            if 0 < max_output <= len(keep):
                return order[np.asarray(keep, np.int64)]
            removed |= suppresses[i - start]  # (marks i itself and earlier boxes too: already decided)
    return order[np.asarray(keep, np.int64)]
