"""Counting logic against hand-made tracks with known crossings and zone occupancy: each failure mode users of
other counters report (jitter on the line, a jump over it at low fps, a re-used track id, a box on a zone's edge,
unconfirmed tracks) with the answer stated."""
import numpy as np
import pytest

from edgecv.edge.config import CountingConfig, LineConfig, ZoneConfig
from edgecv.edge.counting import Counter, GroupMap, LineCounter, Smoother, ZoneCounter, points_in_polygon
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
# The table below walks box centres (anchor "center"); the hysteresis band is 0.02 of the diagonal = 4.5 px.
DOOR = LineConfig(name="door", points=((0.0, 0.5), (1.0, 0.5)), in_side="left", anchor="center")


def walk(counter, track_id, ys, x=100, cls=PERSON):
    events = []
    for y in ys:
        events += counter.update(tracked((track_id, cls, x, y)), (W, H))
    return events


def box(track_id, cls, x1, y1, x2, y2):
    return Detections(np.array([[x1, y1, x2, y2]], np.float32), np.array([0.9], np.float32),
                      np.array([cls], np.int64), track_ids=np.array([track_id], np.int64))


@pytest.mark.parametrize("ys,expected_in,expected_out", [
    ([80, 60, 40, 20], 1, 0),          # bottom -> top: into the "left" (upper) side
    ([20, 40, 60, 80], 0, 1),          # top -> bottom: out
    ([80, 60, 40, 60, 80], 1, 1),      # in, then back out
    ([80, 60, 55, 60, 80], 0, 0),      # approaches, never crosses
    ([80, 50, 20], 1, 0),              # touches the line exactly once on the way: one crossing
    ([20, 50, 50, 50, 20], 0, 0),      # comes to the line and turns back
    ([80, 53, 47, 53, 47, 52, 48, 20], 1, 0),  # jitters on the line (within 4.5 px) on its way in: one crossing
    ([80, 20], 1, 0),                  # jumps over the line between two frames (2 fps): exactly one
    ([80, 20, 80, 20], 2, 1),          # three jumps: three crossings
])
def test_line_crossings(ys, expected_in, expected_out):
    line = LineCounter(DOOR)
    events = walk(line, 1, ys)
    assert (line.people_in, line.people_out) == (expected_in, expected_out)
    assert [e["direction"] for e in events].count("in") == expected_in
    assert all(e["track_id"] == 1 and e["line"] == "door" for e in events)


def test_jitter_on_the_line_counts_nothing():
    """A person standing on the door line: the box centre jitters +-4 px (detector noise) for 200 frames."""
    line = LineCounter(DOOR)
    rng = np.random.default_rng(1)
    events = walk(line, 1, (50 + rng.uniform(-4, 4, 200)).tolist())
    assert events == [] and (line.people_in, line.people_out) == (0, 0)
    # without the hysteresis the same path counts dozens of crossings: the test can tell
    bare = LineCounter(DOOR.replace(hysteresis=0.0))
    walk(bare, 1, (50 + rng.uniform(-4, 4, 200)).tolist())
    assert bare.people_in + bare.people_out > 20


def test_the_feet_cross_the_line_not_the_box_centre():
    """People are counted by the bottom centre of their box by default: a tall box whose centre is still above
    the line, whose feet have passed it, has crossed."""
    line = LineCounter(LineConfig(points=((0.0, 0.5), (1.0, 0.5))))  # the default anchor: bottom_center
    assert line.config.anchor == "bottom_center"
    line.update(box(1, PERSON, 90, 0, 110, 40), (W, H))           # feet at 40: inside (above)
    events = line.update(box(1, PERSON, 90, 20, 110, 70), (W, H))  # centre 45 (above), feet 70: out
    assert [e["direction"] for e in events] == ["out"]


def test_a_reused_track_id_makes_no_phantom_crossing():
    """Track 7 walks up to the line from below and is lost; long after the tracker ended it (max_age 15), id 7
    comes back for another person above the line (another tracker, a restart, an id wrap): no crossing."""
    line = LineCounter(DOOR, max_gap=15)
    walk(line, 7, [90, 80, 70])
    for _ in range(20):
        line.update(tracked(), (W, H))
    walk(line, 7, [20, 15, 10])
    assert (line.people_in, line.people_out) == (0, 0)
    # the same id seen again within max_age is the same track: a real crossing across the gap counts
    walk(line, 8, [90, 80, 70])
    for _ in range(5):
        line.update(tracked(), (W, H))
    walk(line, 8, [20])
    assert (line.people_in, line.people_out) == (1, 0)


def test_crossings_per_class_and_direction_events():
    line = LineCounter(DOOR, names=lambda c: VOC[c])
    walk(line, 1, [80, 20])
    walk(line, 2, [20, 80], cls=BOTTLE)
    assert line.by_class == {"person": {"in": 1, "out": 0}, "bottle": {"in": 0, "out": 1}}
    assert line.totals() == {"in": 1, "out": 1, "by_class": {"bottle": {"in": 0, "out": 1},
                                                             "person": {"in": 1, "out": 0}}}


def test_unconfirmed_tracks_are_not_counted():
    """The tracker hands on confirmed tracks only (min_hits): a detection that flashes across the line in two
    frames is no crossing; a person seen three frames before and after is."""
    from edgecv.edge.config import TrackerConfig
    from edgecv.edge.tracker import IouTracker

    tracker, line = IouTracker(TrackerConfig(min_hits=3, iou_threshold=0.1)), LineCounter(DOOR)
    for y in (45, 55):   # two frames: never confirmed
        line.update(tracker.update(Detections(np.array([[90, y - 20, 110, y + 20]], np.float32),
                                              np.array([0.9], np.float32), np.array([PERSON]))), (W, H))
    assert (line.people_in, line.people_out) == (0, 0)
    for y in (90, 85, 80, 70, 60, 50, 40, 30, 20):
        line.update(tracker.update(Detections(np.array([[90, y - 20, 110, y + 20]], np.float32),
                                              np.array([0.9], np.float32), np.array([PERSON]))), (W, H))
    assert (line.people_in, line.people_out) == (1, 0)


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


SHELF = ZoneConfig(name="shelf", polygon=[(0.0, 0.0), (0.5, 0.0), (0.5, 0.4), (0.0, 0.4)])  # x < 100, y < 40


def test_counter_people_goods_zones_and_groups():
    config = CountingConfig(window=1, inertia=1, line=DOOR, zones=[SHELF], groups={"car": "goods"})
    counter = Counter(config, GroupMap(VOC, "voc", config.groups))
    counts, events = counter.update(tracked((1, PERSON, 150, 80), (2, BOTTLE, 20, 20), (3, BOTTLE, 30, 20),
                                            (4, CAR, 150, 20), (5, VOC.index("dog"), 150, 30)), (W, H))
    assert (counts.people, counts.goods) == (1, 3)
    assert counts.by_class == {"bottle": 2, "car": 1, "person": 1}
    assert counts.zones == {"shelf": 2}
    assert [(e["type"], e.get("track_id")) for e in events] == [("zone_enter", 2), ("zone_enter", 3),
                                                                ("zone_change", None)]
    assert events[-1] == {"type": "zone_change", "zone": "shelf", "group": "goods", "before": 0, "after": 2}
    counts, events = counter.update(tracked((1, PERSON, 150, 20), (2, BOTTLE, 20, 20), (3, BOTTLE, 30, 60)), (W, H))
    assert counts.people_in == 1 and counts.zones == {"shelf": 1}
    assert counts.lines == {"door": {"in": 1, "out": 0, "by_class": {"person": {"in": 1, "out": 0}}}}
    assert counts.zone_detail["shelf"]["by_class"] == {"bottle": 1}
    assert [e["type"] for e in events] == ["line_crossing", "zone_leave", "zone_change"]


def _stay(zone, track_id, inside_pattern, cls=BOTTLE, fps=10.0, start=0):
    """A goods box whose centre is inside the shelf (x=20) or just outside it (x=110) frame by frame."""
    events = []
    for i, inside in enumerate(inside_pattern, start):
        d = tracked((track_id, cls, 20 if inside else 110, 20))
        events += zone.update(d, np.array(["goods"] * len(d)), (W, H), ts=i / fps)
    return events


def test_a_box_on_a_zone_edge_does_not_flicker():
    """A box on the shelf's edge, detected in and out frame by frame (and in twice, out twice): with inertia 3,
    no event at all; the zone counts it only once it was inside 3 frames in a row."""
    zone = ZoneCounter(SHELF, inertia=3)
    flicker = [True, False] * 20 + [True, True, False, False] * 10
    assert _stay(zone, 1, flicker) == [] and zone.count == 0
    # with inertia 1 (no inertia) the same box makes an event every frame: the test can tell
    assert len(_stay(ZoneCounter(SHELF, inertia=1), 1, flicker)) > 40


def test_enter_and_leave_after_k_frames_with_dwell_time():
    zone = ZoneCounter(SHELF, inertia=3, names=lambda c: VOC[c])
    events = _stay(zone, 4, [False] * 2 + [True] * 30 + [False, True] + [False] * 5, fps=10.0)
    kinds = [(e["type"], e.get("track_id")) for e in events]
    assert kinds == [("zone_enter", 4), ("zone_change", None), ("zone_leave", 4), ("zone_change", None)]
    # entered from frame 2 (its first frame inside), left from frame 34 (its first of 3 frames out in a row)
    assert events[2]["dwell_s"] == pytest.approx(3.2) and events[0]["class"] == "bottle"
    assert zone.totals() == {"entered": 1, "left": 1, "dwell_s_total": pytest.approx(3.2)}


def test_a_track_that_ends_inside_leaves_and_a_reused_id_starts_outside():
    zone = ZoneCounter(SHELF, inertia=2, max_gap=5)
    _stay(zone, 9, [True] * 5)
    assert zone.count == 1
    events = []
    for i in range(6):  # lost for longer than the tracker keeps it
        events += zone.update(tracked(), np.array([], object), (W, H), ts=1.0 + i)
    assert [e["type"] for e in events] == ["zone_leave", "zone_change"] and zone.count == 0
    assert events[0]["dwell_s"] == pytest.approx(0.4)  # first frame inside (0.0) to last seen (0.4)
    assert _stay(zone, 9, [True], start=100) == [] and zone.count == 0  # id 9 again: a new track, not yet in


def test_a_new_configuration_keeps_totals_of_the_same_line_and_zones():
    config = CountingConfig(window=1, inertia=1, line=DOOR, zones=[SHELF])
    groups = GroupMap(VOC, "voc", {})
    counter = Counter(config, groups)
    counter.update(tracked((1, PERSON, 150, 80), (2, BOTTLE, 20, 20)), (W, H))
    counts, _ = counter.update(tracked((1, PERSON, 150, 20), (2, BOTTLE, 20, 20)), (W, H))
    assert counts.people_in == 1 and counts.zones == {"shelf": 1}

    moved = CountingConfig(window=1, inertia=1, line=LineConfig(name="door", points=((0.0, 0.6), (1.0, 0.6))),
                           zones=[SHELF, ZoneConfig(name="new", polygon=[(0.6, 0.6), (1.0, 0.6), (1.0, 1.0)])])
    counter = Counter(moved, groups, previous=counter)
    counts, events = counter.update(tracked((2, BOTTLE, 20, 20)), (W, H))
    assert (counts.people_in, counts.people_out) == (1, 0)  # the door's totals carry over
    assert counts.zones == {"shelf": 1, "new": 0} and events == []  # the bottle stays in the kept zone

    renamed = CountingConfig(window=1, line=LineConfig(name="side", points=((0.0, 0.6), (1.0, 0.6))))
    counts, _ = Counter(renamed, groups, previous=counter).update(tracked(), (W, H))
    assert (counts.people_in, counts.people_out) == (0, 0) and counts.zones == {}  # another line starts at 0


def test_totals_restore_into_a_new_counter():
    config = CountingConfig(window=1, inertia=1, line=DOOR, zones=[SHELF])
    groups = GroupMap(VOC, "voc", {})
    counter = Counter(config, groups)
    walk(counter.line, 1, [80, 20])
    _stay(counter.zones[0], 2, [True, False])
    saved = counter.totals()
    assert saved == {"lines": {"door": {"in": 1, "out": 0, "by_class": {"person": {"in": 1, "out": 0}}}},
                     "zones": {"shelf": {"entered": 1, "left": 1, "dwell_s_total": pytest.approx(0.1)}}}
    fresh = Counter(config, groups)
    fresh.restore(saved)
    counts, _ = fresh.update(tracked(), (W, H))
    assert counts.people_in == 1 and counts.zone_detail["shelf"]["entered"] == 1
