"""The edge loop: cameras -Frame-> one shared Detector -Detections-> each camera's Tracker and Counter -> sinks.

Each camera's frames are read and preprocessed in a thread of its own (a file's ahead, so decoding overlaps
inference; a live source's latest when a buffer of its own is free) and handed to the box's detection streams
(``config.streams`` model instances, whichever is free, for all cameras). The loop thread takes the results in the
order they went in (so each camera's in frame order), tracks and counts them as that camera, and hands the record
of the frame to the sinks. A camera that ends (a file, ``max_frames``) leaves the others going; a live camera that
drops reconnects on its own. A frame the model can't take (``ValueError`` from preparing or detecting it) is
skipped and counted; a sink that fails is logged and counted; any other exception is a bug: the run stops (the
sinks are closed first, so the counts and totals are flushed) and the exception goes to the caller.
"""
from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from edgecv.edge.cameras import Camera
from edgecv.edge.config import DEFAULT_CAMERA, CameraConfig, RunConfig
from edgecv.edge.counting import Counts, GroupMap
from edgecv.edge.detector import Detector
from edgecv.edge.sinks import Sinks
from edgecv.edge.stats import combined
from edgecv.edge.streams import DetectionStreams

log = logging.getLogger("edgecv.loop")
_END = object()


@dataclass
class Summary:
    frames: int
    fps: float
    counts: Counts | None       # the first camera's
    dropped: int
    errors: int
    queued: int
    cameras: dict = field(default_factory=dict)  # name -> {frames, fps, dropped, errors, counts}
    loop_cpu_ms_per_frame: float = 0.0


class EdgeLoop:
    def __init__(self, config: RunConfig, detector: Detector, sources, sinks=(), max_frames: int | None = None,
                 classifier=None, totals: dict | None = None):
        """``sources``: one ``Source`` (the camera ``config.sources[0]`` names, else ``main``), or camera name ->
        ``Source`` in the order of ``config.sources``; ``sinks``: what gets each frame's record (``edge.sinks``);
        ``max_frames``: per camera; ``totals``: camera name -> totals to start from (``TotalsFile.load``)."""
        self.config, self.detector, self.max_frames = config, detector, max_frames
        manifest = detector.manifest
        self.model_name = manifest.model
        detector.configure(config.detect, config.tracker.low_score)
        self.groups = GroupMap(manifest.classes, manifest.groups, config.counting.groups)
        if not isinstance(sources, dict):  # one source
            name = config.sources[0].name if config.sources else DEFAULT_CAMERA
            sources = {name: sources}
        specs = {c.name: c for c in config.sources}
        ids = itertools.count(1)
        self.cameras = [Camera(specs.get(name) or CameraConfig(name=name, url=source.name), source, config,
                               self._groups_of(specs.get(name), config), ids, classifier)
                        for name, source in sources.items()]
        for camera in self.cameras:
            camera.counter.restore((totals or {}).get(camera.name, {}))
        self.sinks = sinks if isinstance(sinks, Sinks) else Sinks(sinks)
        self.loop_cpu_s = 0.0
        self._pending: RunConfig | None = None
        self._pending_lock = threading.Lock()
        self._readers: list[threading.Thread] = []

    def _groups_of(self, spec: CameraConfig | None, config: RunConfig) -> GroupMap:
        counting = config.counting_of(spec) if spec is not None else config.counting
        if counting.groups == config.counting.groups and hasattr(self, "groups"):
            return self.groups
        manifest = self.detector.manifest
        return GroupMap(manifest.classes, manifest.groups, counting.groups)

    def camera(self, name: str) -> Camera:
        return next(c for c in self.cameras if c.name == name)

    def reconfigure(self, config: RunConfig) -> None:
        """Apply a new configuration from any thread, at the next frame: thresholds (from the next frame a stream
        starts on), tracker, each camera's counting (line/zone totals of the same name carry over), publishing
        intervals. The device name, cameras, model and streams are fixed for a loop's life: changing them means a
        new loop."""
        with self._pending_lock:
            self._pending = config

    def _apply_pending(self) -> None:
        with self._pending_lock:
            config, self._pending = self._pending, None
        if config is None:
            return
        self.config = config
        self.detector.configure(config.detect, config.tracker.low_score)
        manifest = self.detector.manifest
        self.groups = GroupMap(manifest.classes, manifest.groups, config.counting.groups)
        specs = {c.name: c for c in config.sources}
        for camera in self.cameras:
            camera.reconfigure(config, self._groups_of(specs.get(camera.name), config))
        log.info("configuration applied")

    def stats_snapshot(self, queued: int) -> tuple[dict, dict, dict]:
        """(the box's stats, each camera's, each sink's failures) for a stats message; starts a new interval."""
        latencies = [c.stats.latencies_ms() for c in self.cameras]
        cameras = {c.name: c.snapshot(reset=True) for c in self.cameras}
        box = combined(list(cameras.values()), latencies, queued)
        box["errors"] += self.sinks.errors
        return box, cameras, dict(self.sinks.failures)

    # --- reading: a thread per camera ---
    def _detections(self, stop: threading.Event, streams: DetectionStreams):
        """(camera, frame, future of its detections and latency), in the order the frames went to the streams.
        Each camera's reader takes a frame, preprocesses it (OpenCV and numpy release the GIL) into an input
        buffer of its own the model reads in place, hands it to the streams and queues it for the loop. A buffer
        is given back once its detection is done, and a reader takes a buffer before it takes a frame: a live
        camera's latest frame is taken when a stream could start on it (one buffer per stream), a file's frames
        are read ahead (a few more buffers). A reader's exception (a bug, or a source error) ends the run."""
        # as many frames queued per camera as there are streams: one more (a frame and an input buffer) holds more
        # memory at peak and gained nothing when measured
        ahead: queue.Queue = queue.Queue(maxsize=streams.count * len(self.cameras))

        def patiently(camera, operation, *args):
            """(True, result) of a queue ``operation``, retried until it succeeds; (False, None) if the camera
            or the loop stops first (then nobody would take or give back anything)."""
            while not (stop.is_set() or camera.stop.is_set()):
                try:
                    return True, operation(*args, timeout=0.2)
                except (queue.Full, queue.Empty):
                    continue
            return False, None

        def detect(free: queue.Queue, frame, buffer):
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

        def read(camera: Camera):
            free: queue.Queue = queue.Queue()
            # one buffer per stream for a live source; for a file, one for each frame queued ahead, the one being
            # read and the loop's current one
            for _ in range(streams.count if camera.source.live else streams.count + 2):
                free.put(self.detector.input_buffer())
            end = _END
            try:
                frames = camera.source.frames(camera.stop)
                while True:
                    got, buffer = patiently(camera, free.get)
                    frame = next(frames, None) if got else None
                    if frame is None:
                        return
                    if not patiently(camera, ahead.put, (camera, frame, detect(free, frame, buffer)))[0]:
                        return
            except Exception as exc:
                end = exc
            finally:
                camera.reader_cpu_s = time.thread_time()
                while not stop.is_set():  # the loop must hear of the end (it drains the queue till then)
                    try:
                        ahead.put((camera, None, end), timeout=0.2)
                        break
                    except queue.Full:
                        continue

        self._readers = [threading.Thread(target=read, args=(c,), name=f"edgecv-read-{c.name}", daemon=True)
                         for c in self.cameras]
        for reader in self._readers:
            reader.start()
        running = len(self.cameras)
        while running and not stop.is_set():
            try:
                camera, frame, item = ahead.get(timeout=0.2)
            except queue.Empty:
                continue
            if frame is None:  # a camera's reader ended
                running -= 1
                camera.stop.set()
                if item is not _END:
                    raise item
                log.info("camera %s ended after %d frames", camera.name, camera.stats.frames)
                continue
            if not camera.stop.is_set():
                yield camera, frame, item

    def _close_sources(self) -> None:
        """Close each source once its reader has let go of it: the reader may be inside a read (closing an OpenCV
        capture another thread is reading from is a use-after-free)."""
        for camera in self.cameras:
            camera.stop.set()
        for reader, camera in zip(self._readers, self.cameras):
            reader.join(timeout=5)
            if reader.is_alive():
                log.warning("the reader of %s did not stop within 5 s; closing it anyway", camera.name)
        for camera in self.cameras:
            camera.source.close()

    def step(self, camera: Camera, frame, detections, latency: float = 0.0) -> None:
        """Track, count and hand on one frame of ``camera``."""
        self._apply_pending()
        self.sinks.handle(camera.step(frame, detections, latency))

    def run(self, stop: threading.Event) -> Summary:
        streams = self.detector.streams(self.config.streams)
        cpu_start = time.thread_time()
        try:
            for camera, frame, detection in self._detections(stop, streams):
                try:
                    detections, latency = detection.result()
                except ValueError as exc:  # a frame the model can't take: skip it, keep counting
                    camera.stats.errors += 1
                    log.warning("skipping frame %d of %s: %s", frame.index, camera.name, exc)
                    continue
                self.step(camera, frame, detections, latency)
                if self.max_frames and camera.stats.frames >= self.max_frames:
                    camera.stop.set()
        finally:
            self.loop_cpu_s = time.thread_time() - cpu_start
            stop.set()
            self._close_sources()
            streams.settle()
            self.sinks.close()  # final counts, stats and totals: also when the run stops on an error
        return self.summary()

    def summary(self) -> Summary:
        frames = sum(c.stats.frames for c in self.cameras)
        cameras = {c.name: {"frames": c.stats.frames, "fps": round(c.stats.overall_fps, 2), "dropped": c.dropped,
                            "errors": c.errors, "counts": c.counts,
                            "reader_cpu_ms_per_frame": round(1000 * c.reader_cpu_s / max(c.stats.frames, 1), 3)}
                   for c in self.cameras}
        return Summary(frames, sum(c.stats.overall_fps for c in self.cameras), self.cameras[0].counts,
                       sum(c.dropped for c in self.cameras), sum(c.errors for c in self.cameras) + self.sinks.errors,
                       0, cameras, round(1000 * self.loop_cpu_s / max(frames, 1), 3))


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


def publishing_sinks(publisher, loop: EdgeLoop) -> list:
    """The sinks that publish: counts, events and stats, and the DLR-shaped detections with ``mqtt.format: dlr``."""
    from edgecv.edge.sinks import DlrSink, PublishSink

    if publisher is None:
        return []
    sinks = [PublishSink(publisher, loop)]
    if loop.config.mqtt is not None and loop.config.mqtt.format == "dlr":
        sinks.append(DlrSink(publisher, loop))
    return sinks
