"""The loop's own life cycle on a real video: the read-ahead thread ends before the source is closed."""
from __future__ import annotations

import threading

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
