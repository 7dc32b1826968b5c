import numpy as np
import pytest

from edgecv.edge.detections import Detections
from edgecv.edge.matching import match
from edgecv.edge.nms import box_iou, nms


def _reference_nms(boxes, scores, classes, thr):
    """Textbook greedy NMS, one box at a time, per class."""
    keep = []
    for i in np.argsort(-scores, kind="stable"):
        if all(classes[i] != classes[k] or box_iou(boxes[i:i + 1], boxes[k:k + 1])[0, 0] <= thr for k in keep):
            keep.append(i)
    return np.asarray(keep)


@pytest.mark.parametrize("seed, n", [(0, 300), (1, 300), (2, 300), (3, 100), (4, 700)])  # 1, 2 and 3 blocks
def test_nms_equals_textbook_greedy(seed, n):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 200, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 80, (n, 2))], axis=1)
    scores = rng.uniform(0, 1, n)
    classes = rng.integers(0, 4, n)
    np.testing.assert_array_equal(nms(boxes, scores, classes, 0.45), _reference_nms(boxes, scores, classes, 0.45))


def test_box_iou_by_hand():
    a = np.array([[0, 0, 10, 10], [5, 5, 5, 9]], float)           # a 10x10 square; a zero-width box
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10], [5, 5, 5, 9]], float)
    np.testing.assert_allclose(box_iou(a, b), [[50 / 150, 0, 1, 0],   # half overlap; apart; itself; no area
                                               [0, 0, 0, 0]])          # a box without area overlaps nothing
    assert box_iou(a[:0], b).shape == (0, 4) and box_iou(a, b[:0]).shape == (2, 0)


def test_nms_topk_and_max_output():
    boxes = np.array([[0, 0, 10, 10], [100, 100, 110, 110], [200, 200, 210, 210]], float)
    scores = np.array([0.5, 0.9, 0.7])
    assert list(nms(boxes, scores, np.zeros(3, int), 0.5, topk=2)) == [1, 2]
    assert list(nms(boxes, scores, np.zeros(3, int), 0.5, max_output=1)) == [1]


def test_overlapping_boxes_of_different_classes_both_survive():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10]], float)
    assert sorted(nms(boxes, np.array([0.9, 0.8]), np.array([0, 1]), 0.3)) == [0, 1]
    assert list(nms(boxes, np.array([0.9, 0.8]), np.array([0, 0]), 0.3)) == [0]


def test_detections_checks_shapes_and_masks():
    with pytest.raises(ValueError, match="boxes"):
        Detections(np.zeros((2, 3)), np.zeros(2), np.zeros(2, int))
    d = Detections(np.arange(8, dtype=np.float32).reshape(2, 4), np.array([0.1, 0.9], np.float32), np.array([1, 2]))
    assert len(d[d.scores > 0.5]) == 1 and d[d.scores > 0.5].class_ids[0] == 2
    assert len(Detections.empty()) == 0


def test_match_pairs_same_class_only():
    a = Detections(np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float32), np.array([0.9, 0.8], np.float32),
                   np.array([1, 1]))
    b = Detections(np.array([[0, 0, 10, 11], [50, 50, 60, 60]], np.float32), np.array([0.9, 0.8], np.float32),
                   np.array([1, 2]))
    m = match(a, b)
    assert m.pairs.tolist() == [[0, 0]] and m.unmatched_a.tolist() == [1] and m.unmatched_b.tolist() == [1]
