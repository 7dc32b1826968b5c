"""Counting logic against hand-made tracks with known crossings and zone occupancy."""
import numpy as np
import pytest

from edgecv.edge.config import CountingConfig, LineConfig, ZoneConfig
from edgecv.edge.counting import Counter, GroupMap, LineCounter, Smoother, points_in_polygon
from edgecv.edge.detections import Detections

W, H = 200, 100
VOC = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
       "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
PERSON, BOTTLE, CAR = VOC.index("person"), VOC.index("bottle"), VOC.index("car")


def tracked(*objects):
    """objects: (track_id, class_id, centre_x, centre_y) -> Detections with 10x10 boxes."""
    if not objects:
        return Detections.empty().with_tracks(np.zeros(0, np.int64))
    tid, cls, x, y = (np.array(v) for v in zip(*objects))
    boxes = np.stack([x - 5, y - 5, x + 5, y + 5], axis=1).astype(np.float32)
    return Detections(boxes, np.full(len(tid), 0.9, np.float32), cls.astype(np.int64), track_ids=tid.astype(np.int64))


# Horizontal door line at y = 50 (A on the left, B on the right). Seen on screen, "left of A->B" is above.
DOOR = LineConfig(name="door", points=((0.0, 0.5), (1.0, 0.5)), in_side="left")


def walk(counter, track_id, ys, x=100, cls=PERSON):
    events = []
    for y in ys:
        events += counter.update(tracked((track_id, cls, x, y)), (W, H))
    return events


@pytest.mark.parametrize("ys,expected_in,expected_out", [
    ([80, 60, 40, 20], 1, 0),          # bottom -> top: into the "left" (upper) side
    ([20, 40, 60, 80], 0, 1),          # top -> bottom: out
    ([80, 60, 40, 60, 80], 1, 1),      # in, then back out
    ([80, 60, 55, 60, 80], 0, 0),      # approaches, never crosses
    ([80, 50, 20], 1, 0),              # touches the line exactly once on the way: one crossing
    ([20, 50, 50, 50, 20], 0, 0),      # comes to the line and turns back
])
def test_line_crossings(ys, expected_in, expected_out):
    line = LineCounter(DOOR)
    events = walk(line, 1, ys)
    assert (line.people_in, line.people_out) == (expected_in, expected_out)
    assert [e["direction"] for e in events].count("in") == expected_in
    assert all(e["track_id"] == 1 and e["line"] == "door" for e in events)


def test_crossing_beside_a_finite_line_does_not_count():
    line = LineCounter(LineConfig(points=((0.0, 0.5), (0.4, 0.5))))  # door spans x in [0, 80]
    walk(line, 1, [80, 20], x=150)
    assert (line.people_in, line.people_out) == (0, 0)
    walk(line, 2, [80, 20], x=40)
    assert line.people_in == 1


def test_in_side_right_flips_direction():
    line = LineCounter(LineConfig(points=((0.0, 0.5), (1.0, 0.5)), in_side="right"))
    walk(line, 1, [80, 20])
    assert (line.people_in, line.people_out) == (0, 1)


def test_two_tracks_interleaved_are_counted_separately():
    line = LineCounter(DOOR)
    for y1, y2 in zip([80, 60, 40, 20], [20, 40, 60, 80]):
        line.update(tracked((1, PERSON, 50, y1), (2, PERSON, 150, y2)), (W, H))
    assert (line.people_in, line.people_out) == (1, 1)


def test_line_needs_track_ids():
    with pytest.raises(ValueError, match="track ids"):
        LineCounter(DOOR).update(Detections.empty(), (W, H))


def test_points_in_polygon_matches_cv2():
    import cv2

    rng = np.random.default_rng(0)
    poly = np.array([[10, 10], [90, 20], [70, 80], [40, 50], [15, 70]], float)
    pts = rng.uniform(0, 100, (500, 2))
    expected = [cv2.pointPolygonTest(poly.astype(np.float32), (float(x), float(y)), False) > 0 for x, y in pts]
    on_edge = [cv2.pointPolygonTest(poly.astype(np.float32), (float(x), float(y)), True) for x, y in pts]
    mask = np.abs(on_edge) > 1e-6
    assert (points_in_polygon(pts, poly)[mask] == np.array(expected)[mask]).all()


def test_smoother_ignores_single_frame_glitches():
    s = Smoother(5)
    assert [s.update(v) for v in [3, 3, 0, 3, 3, 9, 3]] == [3, 3, 3, 3, 3, 3, 3]


def test_counter_people_goods_zones_and_groups():
    config = CountingConfig(window=1, line=DOOR, zones=[
        ZoneConfig(name="shelf", polygon=[(0.0, 0.0), (0.5, 0.0), (0.5, 0.4), (0.0, 0.4)])],
        groups={"car": "goods"})
    counter = Counter(config, GroupMap(VOC, "voc", config.groups))
    counts, events = counter.update(tracked((1, PERSON, 150, 80), (2, BOTTLE, 20, 20), (3, BOTTLE, 30, 20),
                                            (4, CAR, 150, 20), (5, VOC.index("dog"), 150, 30)), (W, H))
    assert (counts.people, counts.goods) == (1, 3)
    assert counts.by_class == {"bottle": 2, "car": 1, "person": 1}
    assert counts.zones == {"shelf": 2}
    assert events == [{"type": "zone_change", "zone": "shelf", "group": "goods", "before": 0, "after": 2}]
    counts, events = counter.update(tracked((1, PERSON, 150, 20), (2, BOTTLE, 20, 20)), (W, H))
    assert counts.people_in == 1 and counts.zones == {"shelf": 1}
    assert [e["type"] for e in events] == ["line_crossing", "zone_change"]


def test_a_new_configuration_keeps_totals_of_the_same_line_and_zones():
    shelf = ZoneConfig(name="shelf", polygon=[(0.0, 0.0), (0.5, 0.0), (0.5, 0.4), (0.0, 0.4)])
    config = CountingConfig(window=1, line=DOOR, zones=[shelf])
    groups = GroupMap(VOC, "voc", {})
    counter = Counter(config, groups)
    counter.update(tracked((1, PERSON, 150, 80), (2, BOTTLE, 20, 20)), (W, H))
    counts, _ = counter.update(tracked((1, PERSON, 150, 20), (2, BOTTLE, 20, 20)), (W, H))
    assert counts.people_in == 1 and counts.zones == {"shelf": 1}

    moved = CountingConfig(window=1, line=LineConfig(name="door", points=((0.0, 0.6), (1.0, 0.6))),
                           zones=[shelf, ZoneConfig(name="new", polygon=[(0.6, 0.6), (1.0, 0.6), (1.0, 1.0)])])
    counter = Counter(moved, groups, previous=counter)
    counts, events = counter.update(tracked((2, BOTTLE, 20, 20)), (W, H))
    assert (counts.people_in, counts.people_out) == (1, 0)  # the door's totals carry over
    assert counts.zones == {"shelf": 1, "new": 0} and events == []  # no change event for a kept zone

    renamed = CountingConfig(window=1, line=LineConfig(name="side", points=((0.0, 0.6), (1.0, 0.6))))
    counts, _ = Counter(renamed, groups, previous=counter).update(tracked(), (W, H))
    assert (counts.people_in, counts.people_out) == (0, 0) and counts.zones == {}  # another line starts at 0
