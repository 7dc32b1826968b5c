"""Detection in parallel streams (each its own model instance, same weights, its share of the cores): the same
detections as one detector, handed back in frame order; the loop tracks and counts exactly as with one stream."""
from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest

from edgecv.edge.config import DetectConfig, RunConfig
from edgecv.edge.detector import Detector
from edgecv.edge.loop import EdgeLoop
from edgecv.edge.sources import VideoFileSource
from edgecv.edge.streams import DetectionStreams

pytestmark = pytest.mark.tvm
LOW = DetectConfig(score_threshold=0.05)  # random weights: low scores, but boxes to compare


class Recorder:
    """A sink that keeps (frame index, tracked detections, counts) of every record."""

    name = "recorder"

    def __init__(self, seen: list):
        self.seen = seen

    def handle(self, record) -> None:
        self.seen.append((record.frame.index, record.tracked, record.counts))

    def close(self) -> None:
        pass


def _frames(opencv_data, count: int) -> list:
    source = VideoFileSource(str(opencv_data / "vtest.avi"))
    try:
        return list(itertools.islice(source.frames(threading.Event()), count))
    finally:
        source.close()


def _same(got, want) -> None:
    assert got.frame_id == want.frame_id
    np.testing.assert_array_equal(got.class_ids, want.class_ids)
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.boxes, want.boxes, rtol=1e-5, atol=1e-3)


@pytest.mark.slow
def test_streams_detect_as_one_detector_does_in_frame_order(detector_artifact, opencv_data):
    detector = Detector(detector_artifact, LOW)
    frames = _frames(opencv_data, 6)
    want = [detector(f.image, f.index) for f in frames]
    assert sum(len(d) for d in want) > 0, "nothing detected: the comparison would mean nothing"
    before = set(threading.enumerate())
    streams = DetectionStreams(detector, 2)
    try:
        futures = [streams.submit(f) for f in frames]  # all at once: both streams busy, finishing in any order
        got = [future.result() for future in futures]
        workers = [t for t in set(threading.enumerate()) - before if t.name.startswith("edgecv-detect")]
    finally:
        streams.close()
    assert len(workers) == 2
    for (detections, latency), expected in zip(got, want):
        _same(detections, expected)
        assert latency > 0


def test_replicas_follow_the_detectors_configuration(detector_artifact):
    detector = Detector(detector_artifact)
    first, twin = detector.replicas(2)
    assert first is detector and twin.model is not detector.model
    assert detector.replicas(2) == [detector, twin]  # made once
    detector.configure(DetectConfig(score_threshold=0.7, nms_iou=0.3), low_score=0.2)
    assert twin.decode_spec == detector.decode_spec and twin.decode_spec.nms_iou == 0.3
    assert twin.kept_from == detector.kept_from == 0.2


@pytest.mark.slow
def test_two_streams_track_and_count_as_one(detector_artifact, opencv_data):
    def run(streams: int):
        seen = []
        loop = EdgeLoop(RunConfig(device="t", streams=streams, detect=LOW), Detector(detector_artifact),
                        VideoFileSource(str(opencv_data / "vtest.avi")), max_frames=12)
        loop.sinks.add(Recorder(seen))
        return loop.run(threading.Event()), seen

    (one, by_one), (two, by_two) = run(1), run(2)
    assert one.frames == two.frames == 12 and one.errors == two.errors == 0
    assert [index for index, _, _ in by_two] == list(range(12))  # in frame order
    assert sum(len(tracked) for _, tracked, _ in by_one) > 0
    for (_, want, counts_one), (_, got, counts_two) in zip(by_one, by_two):
        _same(got, want)
        np.testing.assert_array_equal(got.track_ids, want.track_ids)
        assert counts_two == counts_one


@pytest.mark.slow
@pytest.mark.mxnet
def test_streams_need_a_compiled_artifact(artifacts):
    from edgecv.edge.errors import ArtifactError

    detector = Detector(artifacts("ssd_512_mobilenet1.0_voc", size=128, reference=True), backend="onnxruntime")
    with pytest.raises(ArtifactError, match="parallel streams run compiled artifacts only"):
        detector.replicas(2)
    assert detector.replicas(1) == [detector]
