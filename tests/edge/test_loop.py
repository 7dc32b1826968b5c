"""The loop's own life cycle on a real video: the read-ahead thread ends before the source is closed; a frame the
model can't take is skipped, a failing sink counted, and any other exception stops the run after the sinks have
flushed the counts and totals."""
from __future__ import annotations

import threading

import pytest

from edgecv.edge.config import RunConfig
from edgecv.edge.detector import Detector
from edgecv.edge.loop import EdgeLoop
from edgecv.edge.sources import VideoFileSource


def _readers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "edgecv-read" and t.is_alive()]


class _WatchedVideo(VideoFileSource):
    """The real file source, noting whether a reader thread was still running when it was closed."""

    readers_at_close: list | None = None

    def close(self):
        self.readers_at_close = _readers()
        super().close()


def test_stopping_early_ends_the_reader_before_closing_the_source(detector_artifact, opencv_data):
    assert not _readers()
    source = _WatchedVideo(str(opencv_data / "vtest.avi"))
    summary = EdgeLoop(RunConfig(device="t"), Detector(detector_artifact), source, max_frames=3).run(threading.Event())
    assert summary.frames == 3
    # closing an OpenCV capture while another thread reads it is a use-after-free; and a reader left blocked on
    # a full queue nobody reads any more would live on until the process ends
    assert source.readers_at_close == []
    assert not _readers()


class _BrokenAfter(VideoFileSource):
    """The real file source, whose decoding hits a bug (a RuntimeError, not an unreadable frame) after N frames."""

    def __init__(self, path, n):
        super().__init__(path)
        self.n = n

    def frames(self, stop):
        for i, frame in enumerate(super().frames(stop)):
            if i == self.n:
                raise RuntimeError("decoder bug")
            yield frame


class _GreyEvery(VideoFileSource):
    """The real file source, every third frame turned grey (H, W): a frame the model can't take."""

    def frames(self, stop):
        import dataclasses

        import cv2

        for frame in super().frames(stop):
            if frame.index % 3 == 2:
                frame = dataclasses.replace(frame, image=cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY))
            yield frame


class _Failing:
    """A sink that fails on every frame (a sink's bug)."""

    name = "broken"

    def handle(self, record):
        raise KeyError("a sink's bug")

    def close(self):
        raise OSError("and on close")


@pytest.mark.broker
def test_a_bug_stops_the_run_after_flushing_counts_and_totals(broker, detector_artifact, opencv_data, tmp_path):
    from broker import Subscriber
    from edgecv.edge.loop import open_publisher, publishing_sinks
    from edgecv.edge.sinks import StateSink
    from edgecv.edge.state import TotalsFile

    sub = Subscriber(broker.port)
    config = RunConfig(device="t", mqtt={"url": broker.url, "outbox": str(tmp_path / "outbox"), "interval": 60})
    publisher = open_publisher(config)
    loop = EdgeLoop(config, Detector(detector_artifact), _BrokenAfter(str(opencv_data / "vtest.avi"), 3))
    for sink in publishing_sinks(publisher, loop):
        loop.sinks.add(sink)
    totals = TotalsFile(tmp_path / "state", "t")
    loop.sinks.add(StateSink(totals, loop, interval=3600))
    with pytest.raises(RuntimeError, match="decoder bug"):
        loop.run(threading.Event())
    try:
        assert publisher.flush(timeout=10)
    finally:
        publisher.stop(flush_timeout=0)
    assert loop.cameras[0].stats.frames == 3
    assert sub.wait_for(lambda m: any(c["frame"] == 2 for c in sub.json("/t/main/counts")))  # the final counts
    assert sub.json("/t/stats")[-1]["frames"] == 3
    assert totals.load() == {"main": loop.cameras[0].counter.totals()}  # saved on the way out
    sub.close()


def test_a_frame_the_model_cannot_take_is_skipped_and_a_failing_sink_counted(detector_artifact, opencv_data, caplog):
    loop = EdgeLoop(RunConfig(device="t"), Detector(detector_artifact), _GreyEvery(str(opencv_data / "vtest.avi")),
                    max_frames=4)
    loop.sinks.add(_Failing())
    with caplog.at_level("WARNING"):
        summary = loop.run(threading.Event())
    assert summary.frames == 4 and summary.cameras["main"]["errors"] == 1  # frame 2 skipped (0, 1, 3, 4 counted)
    assert loop.sinks.failures == {"broken": 5}                          # 4 frames and the close
    assert summary.errors == 1 + 5
    assert sum("sink broken failed" in r.message for r in caplog.records) == 5
    assert sum("skipping frame 2 of main" in r.message for r in caplog.records) == 1
