"""The edge loop: Source -Frame-> Detector -Detections-> Tracker -> Counter -Counts-> sinks.

Frames are read and preprocessed in a thread (a file's ahead, so decoding overlaps inference; a live source's latest
when a stream is free) and detected in ``config.streams`` parallel streams while the loop tracks and counts, in
frame order. A sink that fails is logged and counted, never allowed to stop the loop.
"""
from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from edgecv.edge.annotate import VideoSink, annotate
from edgecv.edge.config import RunConfig
from edgecv.edge.counting import Counter, Counts, GroupMap
from edgecv.edge.detections import Detections
from edgecv.edge.detector import Detector
from edgecv.edge.payloads import counts_message, dlr_message, encode, event_message, stats_message
from edgecv.edge.sources import Source
from edgecv.edge.stats import LoopStats
from edgecv.edge.streams import DetectionStreams
from edgecv.edge.tracker import IouTracker

log = logging.getLogger("edgecv.loop")
_END = object()


@dataclass
class Summary:
    frames: int
    fps: float
    counts: Counts | None
    dropped: int
    errors: int
    queued: int


class EdgeLoop:
    def __init__(self, config: RunConfig, detector: Detector, source: Source, publisher=None,
                 video: VideoSink | None = None, progress=None, max_frames: int | None = None, classifier=None):
        self.config, self.detector, self.source, self.classifier = config, detector, source, classifier
        self.publisher, self.video, self.max_frames = publisher, video, max_frames
        self.progress = progress
        manifest = detector.manifest
        self.model_name = manifest.model
        detector.configure(config.detect, config.tracker.low_score)
        self.groups = GroupMap(manifest.classes, manifest.groups, config.counting.groups)
        self.tracker = IouTracker(config.tracker, high_score=config.detect.score_threshold)
        self.counter = Counter(config.counting, self.groups)
        self.stats = LoopStats()
        self.counts: Counts | None = None
        self._published_key = None
        self._last_counts_at = self._last_stats_at = time.monotonic()
        self._pending: RunConfig | None = None
        self._pending_lock = threading.Lock()
        self._reader: threading.Thread | None = None  # reads files ahead (live sources read in their own thread)
        self.frame_listeners: list = []  # callables (frame, tracked detections, counts), e.g. a live view

    def reconfigure(self, config: RunConfig) -> None:
        """Apply a new configuration from any thread, at the next frame: thresholds (from the next frame a stream
        starts on), tracker, counting (line/zone totals of the same name carry over), publishing interval. The
        device name, source, model and streams are fixed for a loop's life: changing them means a new loop."""
        with self._pending_lock:
            self._pending = config

    def _apply_pending(self) -> None:
        with self._pending_lock:
            config, self._pending = self._pending, None
        if config is None:
            return
        self.config = config
        self.detector.configure(config.detect, config.tracker.low_score)
        self.groups = GroupMap(self.detector.manifest.classes, self.detector.manifest.groups, config.counting.groups)
        self.tracker.configure(config.tracker, high_score=config.detect.score_threshold)
        self.counter = Counter(config.counting, self.groups, previous=self.counter)
        self._published_key = None  # publish the counts under the new configuration
        log.info("configuration applied")

    # --- sinks, each behind a guard ---
    def _guard(self, what: str, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as exc:  # a sink must never stop the loop
            self.stats.errors += 1
            log.error("%s failed: %s", what, exc)

    def _publish_counts(self, frame_index: int, ts: float, force: bool = False) -> None:
        if self.publisher is None or self.counts is None:
            return
        now = time.monotonic()
        if force or self.counts.key() != self._published_key or now - self._last_counts_at >= self.config.mqtt.interval:
            message = counts_message(self.config.device, self.model_name, frame_index, ts, self.counts)
            self.publisher.publish("counts", lambda seq: encode({**message, "seq": seq}))
            self._published_key, self._last_counts_at = self.counts.key(), now

    def _publish_events(self, events, frame_index: int, ts: float) -> None:
        for event in events:
            message = event_message(self.config.device, self.model_name, frame_index, ts, event)
            self.publisher.publish("events", lambda seq, m=message: encode({**m, "seq": seq}))

    def _publish_stats(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.publisher is None or not (force or now - self._last_stats_at >= self.config.stats_interval):
            return
        message = stats_message(self.config.device, time.time(),
                                self.stats.snapshot(self.source.dropped, len(self.publisher.outbox)))
        self.publisher.publish("stats", lambda seq: encode({**message, "seq": seq}), qos=0)
        self._last_stats_at = now

    # --- the loop ---
    def _detections(self, stop: threading.Event, streams: DetectionStreams):
        """(frame, future of its detections and latency), in frame order. A reader thread takes the frames and
        preprocesses each (OpenCV and numpy release the GIL) into an input buffer the model reads in place, then
        hands it to the detection streams, which run while the loop tracks and counts the frames before. Each
        buffer is given back once its detection is done, and the reader takes a buffer before it takes a frame:
        a live source's latest frame is taken when a stream is free to start on it (one buffer per stream), a
        file's frames are read ahead (a few more buffers)."""
        live = self.source.live
        # as many frames queued as there are streams: one more (a frame and an input buffer) held 2.2 MB more at
        # peak and gained nothing (vtest.avi, alternating runs of the OID detector, float32 and int8, 1 and 2
        # streams: the same frames/s within the runs' spread)
        ahead: queue.Queue = queue.Queue(maxsize=streams.count)
        free: queue.Queue = queue.Queue()
        # one buffer per stream for a live source; for a file, one for each frame queued ahead, the one being read
        # and the loop's current one
        for _ in range(streams.count if live else ahead.maxsize + 2):
            free.put(self.detector.input_buffer())

        def patiently(operation, *args):
            """(True, result) of a queue ``operation``, retried until it succeeds; (False, None) if the loop stops
            first (then nobody would take or give back anything)."""
            while not stop.is_set():
                try:
                    return True, operation(*args, timeout=0.2)
                except (queue.Full, queue.Empty):
                    continue
            return False, None

        def offer(item) -> bool:
            return patiently(ahead.put, item)[0]

        def detect(frame, buffer):
            try:
                prepared = self.detector.prepare(frame.image, buffer)
            except ValueError as exc:  # a frame the model can't take: the loop meets the error and skips it
                free.put(buffer)
                refused = Future()
                refused.set_exception(exc)
                return refused
            detection = streams.submit(frame, prepared)
            detection.add_done_callback(lambda _: free.put(buffer))
            return detection

        def read():
            try:
                frames = self.source.frames(stop)
                while True:
                    got, buffer = patiently(free.get)
                    frame = next(frames, None) if got else None
                    if frame is None:
                        return
                    if not offer((frame, detect(frame, buffer))):
                        return
            except Exception as exc:
                log.error("reading %s failed: %s", self.source.name, exc)
            finally:
                offer(_END)

        self._reader = threading.Thread(target=read, name="edgecv-read", daemon=True)
        self._reader.start()
        while True:
            try:
                item = ahead.get(timeout=0.2)
            except queue.Empty:
                if stop.is_set():  # stopped from outside (a signal): the reader queues nothing more
                    return
                continue
            if item is _END:
                return
            yield item

    def _close_source(self) -> None:
        """Close the source once its reader has let go of it: the reader may be inside a read (closing an
        OpenCV capture another thread is reading from is a use-after-free)."""
        if self._reader is not None:
            self._reader.join(timeout=5)
            if self._reader.is_alive():
                log.warning("the reader of %s did not stop within 5 s; closing it anyway", self.source.name)
        self.source.close()

    def step(self, frame, detections: Detections, latency: float = 0.0) -> None:
        """Track, count and publish one frame's detections (``latency``: seconds the detector took)."""
        self._apply_pending()
        self.stats.frame(latency)
        tracked = self.tracker.update(detections)
        h, w = frame.image.shape[:2]
        goods_types = None
        if self.classifier is not None:
            goods = self.groups.groups(tracked.class_ids) == "goods"
            goods_types = self.classifier.update(frame.image, tracked, goods, frame.index)
        self.counts, events = self.counter.update(tracked, (w, h), goods_types)
        if self.publisher is not None:
            self._guard("publishing events", self._publish_events, events, frame.index, frame.timestamp)
            self._guard("publishing counts", self._publish_counts, frame.index, frame.timestamp)
            self._guard("publishing stats", self._publish_stats)
            if self.config.mqtt.format == "dlr":
                confident = detections[detections.scores >= self.config.detect.score_threshold]
                payload = encode(dlr_message(frame.timestamp, confident, self.groups.name))
                self._guard("publishing DLR message", self.publisher.publish_raw, self.config.mqtt.dlr_topic, payload)
        if self.video is not None:
            self._guard("writing video", lambda: self.video.write(
                annotate(frame.image, tracked, self.groups, self.config.counting, self.counts)))
        for listener in self.frame_listeners:
            self._guard("frame listener", listener, frame, tracked, self.counts)
        if self.progress is not None:
            self._guard("progress", self.progress.update, self)

    def run(self, stop: threading.Event) -> Summary:
        last = None
        streams = self.detector.streams(self.config.streams)
        try:
            for frame, detection in self._detections(stop, streams):
                try:
                    self.step(frame, *detection.result())
                except ValueError as exc:  # a frame the model can't take: skip it, keep counting
                    self.stats.errors += 1
                    log.warning("skipping frame %d: %s", frame.index, exc)
                    continue
                last = frame
                if self.max_frames and self.stats.frames >= self.max_frames:
                    break
        finally:
            stop.set()
            self._close_source()
            streams.settle()
            if last is not None:
                self._guard("publishing final counts", self._publish_counts, last.index, last.timestamp, True)
            self._guard("publishing final stats", self._publish_stats, True)
            if self.video is not None:
                self.video.close()
            if self.progress is not None:
                self.progress.close(self)
        queued = len(self.publisher.outbox) if self.publisher is not None else 0
        return Summary(self.stats.frames, self.stats.overall_fps, self.counts,
                       self.source.dropped, self.stats.errors + self.source.errors, queued)


class ProgressLine:
    """A one-line status on a terminal (redrawn), or a line every 10 s when not a terminal."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._last = 0.0

    def update(self, loop: EdgeLoop) -> None:
        now = time.monotonic()
        if now - self._last < (0.5 if self.tty else 10.0):
            return
        self._last = now
        self.stream.write(("\r" if self.tty else "") + self._text(loop) + ("" if self.tty else "\n"))
        self.stream.flush()

    def _text(self, loop: EdgeLoop) -> str:
        c = loop.counts
        counts = f"people {c.people} goods {c.goods} in {c.people_in} out {c.people_out}" if c else "-"
        queued = f" queued {len(loop.publisher.outbox)}" if loop.publisher is not None else ""
        return (f"frames {loop.stats.frames}  {loop.stats.overall_fps:5.1f} fps  {counts}  "
                f"dropped {loop.source.dropped}{queued}")

    def close(self, loop: EdgeLoop) -> None:
        self.stream.write(("\r" if self.tty else "") + self._text(loop) + "\n")
        self.stream.flush()


def default_outbox(device: str, configured: Path | None) -> Path:
    """Where a device's unacknowledged messages wait: ``<outbox folder>/<device>.sqlite``."""
    base = Path(configured) if configured else Path.home() / ".cache" / "edgecv" / "outbox"
    return base / f"{device}.sqlite"


def open_publisher(config: RunConfig):
    """The MQTT publisher ``config`` asks for (started, with its durable outbox), or None without ``mqtt``."""
    if config.mqtt is None:
        return None
    from edgecv.edge.mqtt import MqttPublisher
    from edgecv.edge.outbox import Outbox

    return MqttPublisher(config.mqtt, config.device, Outbox(default_outbox(config.device, config.mqtt.outbox))).start()
