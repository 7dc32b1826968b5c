import numpy as np

from edgecv.edge.config import TrackerConfig
from edgecv.edge.detections import Detections
from edgecv.edge.tracker import IouTracker


def dets(*rows):
    """rows: (x, y, score, class) -> 20x20 boxes."""
    x, y, s, c = (np.array(v, float) for v in zip(*rows))
    return Detections(np.stack([x, y, x + 20, y + 20], 1).astype(np.float32), s.astype(np.float32), c.astype(np.int64))


def test_ids_follow_moving_objects_and_new_tracks_need_min_hits():
    t = IouTracker(TrackerConfig(min_hits=2))
    assert len(t.update(dets((0, 0, 0.9, 1), (100, 100, 0.9, 1)))) == 0   # not confirmed yet
    out = t.update(dets((3, 0, 0.9, 1), (103, 100, 0.9, 1)))
    first = dict(zip(out.boxes[:, 0].round().tolist(), out.track_ids.tolist()))
    out = t.update(dets((106, 100, 0.9, 1), (6, 0, 0.9, 1)))            # order swapped
    again = dict(zip(out.boxes[:, 0].round().tolist(), out.track_ids.tolist()))
    assert first[3] == again[6] and first[103] == again[106] and first[3] != first[103]


def test_low_score_detection_keeps_the_track_alive():
    t = IouTracker(TrackerConfig(min_hits=1), high_score=0.5)
    tid = t.update(dets((0, 0, 0.9, 1))).track_ids[0]
    out = t.update(dets((2, 0, 0.2, 1)))        # occluded: low score, still the same person
    assert out.track_ids.tolist() == [tid]
    assert t.update(dets((4, 0, 0.9, 1))).track_ids.tolist() == [tid]


def test_classes_do_not_swap_and_lost_tracks_end():
    t = IouTracker(TrackerConfig(min_hits=1, max_age=2))
    a = t.update(dets((0, 0, 0.9, 1))).track_ids[0]
    b = t.update(dets((0, 0, 0.9, 2))).track_ids[0]          # same place, other class: a new track
    assert a != b
    for _ in range(3):
        t.update(Detections.empty())
    assert t.update(dets((0, 0, 0.9, 1))).track_ids[0] not in (a, b)
