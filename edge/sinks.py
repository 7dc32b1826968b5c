"""Sinks: where each frame's record goes once it is tracked and counted. The loop knows only this interface.

A sink has ``handle(record)`` (a ``FrameRecord``, in the loop's thread: keep it quick) and ``close()`` (the run
ends: flush what is pending). ``Sinks`` calls each behind a guard: a sink that fails is logged and counted, per
sink, and never stops the loop. The sinks here: ``PublishSink`` (counts, events and stats over a publisher: MQTT
or Greengrass IPC), ``DlrSink`` (AWS DLR-shaped detections), ``VideoSink`` (annotated video per camera),
``ProgressSink`` (a progress line), ``StateSink`` (totals kept across restarts); the web view is one too.
"""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Protocol

from edgecv.edge.annotate import VideoWriter, annotate
from edgecv.edge.payloads import box_counts_message, counts_message, dlr_message, encode, event_message, stats_message

log = logging.getLogger("edgecv.sinks")


class Sink(Protocol):
    name: str

    def handle(self, record) -> None: ...

    def close(self) -> None: ...


class Sinks:
    """The loop's sinks, each behind a guard; ``failures``: sink name -> failures so far."""

    def __init__(self, sinks=()):
        self.sinks = list(sinks)
        self.failures: dict[str, int] = {s.name: 0 for s in self.sinks}

    def add(self, sink) -> None:
        self.sinks.append(sink)
        self.failures.setdefault(sink.name, 0)

    def _guard(self, sink, what: str, *args) -> None:
        try:
            getattr(sink, what)(*args)
        except Exception as exc:  # a sink must never stop the loop
            self.failures[sink.name] = self.failures.get(sink.name, 0) + 1
            log.error("sink %s failed (%s): %s: %s", sink.name, what, type(exc).__name__, exc)

    def handle(self, record) -> None:
        for sink in self.sinks:
            self._guard(sink, "handle", record)

    def close(self) -> None:
        for sink in self.sinks:
            self._guard(sink, "close")

    @property
    def errors(self) -> int:
        return sum(self.failures.values())


class PublishSink:
    """Counts, events and stats over a publisher (``OutboxPublisher``): per camera ``<camera>/counts`` on change
    and every ``mqtt.interval`` s, ``<camera>/events``; the box's ``counts`` (every camera's and their sums) when
    any camera's change and every interval; the box's ``stats`` every ``stats_interval`` s."""

    name = "mqtt"

    def __init__(self, publisher, loop):
        self.publisher, self.loop = publisher, loop
        self._published: dict[str, tuple] = {}   # camera -> counts key last published
        self._counts_at: dict[str, float] = {}
        self._box_key = None
        self._box_at = self._stats_at = time.monotonic()

    def _config(self):
        return self.loop.config

    def handle(self, record) -> None:
        camera, frame, device, model = record.camera.name, record.frame, self._config().device, self.loop.model_name
        for event in record.events:
            message = event_message(device, camera, model, frame.index, frame.timestamp, event)
            self.publisher.publish(f"{camera}/events", lambda seq, m=message: encode({**m, "seq": seq}))
        self._counts(record.camera)
        self._box()
        self._stats()

    def _counts(self, camera, force: bool = False) -> None:
        counts, frame = camera.counts, camera.last_frame
        if counts is None:
            return
        now, key = time.monotonic(), counts.key()
        if force or key != self._published.get(camera.name) or \
                now - self._counts_at.get(camera.name, 0.0) >= self._config().mqtt.interval:
            message = counts_message(self._config().device, camera.name, self.loop.model_name, frame.index,
                                     frame.timestamp, counts)
            self.publisher.publish(f"{camera.name}/counts", lambda seq: encode({**message, "seq": seq}))
            self._published[camera.name], self._counts_at[camera.name] = key, now

    def _box(self, force: bool = False) -> None:
        cameras = {c.name: (c.last_frame.index, c.counts) for c in self.loop.cameras if c.counts is not None}
        if not cameras:
            return
        now, key = time.monotonic(), tuple((name, c.key()) for name, (_, c) in sorted(cameras.items()))
        if force or key != self._box_key or now - self._box_at >= self._config().mqtt.interval:
            message = box_counts_message(self._config().device, self.loop.model_name, time.time(), cameras)
            self.publisher.publish("counts", lambda seq: encode({**message, "seq": seq}))
            self._box_key, self._box_at = key, now

    def _stats(self, force: bool = False) -> None:
        now = time.monotonic()
        if not (force or now - self._stats_at >= self._config().stats_interval):
            return
        self._stats_at = now
        message = stats_message(self._config().device, time.time(), *self.loop.stats_snapshot(len(self.publisher.outbox)))
        self.publisher.publish("stats", lambda seq: encode({**message, "seq": seq}), qos=0)

    def close(self) -> None:
        """The final counts of every camera and the box, and the final stats."""
        for camera in self.loop.cameras:
            self._counts(camera, force=True)
        self._box(force=True)
        self._stats(force=True)


class DlrSink:
    """Every frame's confident detections in the shape of AWS's ``aws.greengrass.DLRObjectDetection``
    (``mqtt.format: dlr``), on ``mqtt.dlr_topic``."""

    name = "dlr"

    def __init__(self, publisher, loop):
        self.publisher, self.loop = publisher, loop

    def handle(self, record) -> None:
        config = self.loop.config
        confident = record.detections[record.detections.scores >= config.detect.score_threshold]
        payload = encode(dlr_message(record.frame.timestamp, confident, record.camera.groups.name))
        self.publisher.publish_raw(config.mqtt.dlr_topic, payload)

    def close(self) -> None:
        pass


class VideoSink:
    """Annotated frames to a video file per camera: ``OUT.mp4`` for one camera, ``OUT-<camera>.mp4`` for each of
    several."""

    name = "video"

    def __init__(self, path: Path, cameras: list[str], fps: dict[str, float] | None = None):
        path = Path(path)
        self.paths = {name: path if len(cameras) == 1 else path.with_name(f"{path.stem}-{name}{path.suffix}")
                      for name in cameras}
        self._writers = {name: VideoWriter(str(p), (fps or {}).get(name, 15.0)) for name, p in self.paths.items()}

    def handle(self, record) -> None:
        camera = record.camera
        self._writers[camera.name].write(annotate(record.frame.image, record.tracked, camera.groups, camera.counting,
                                                  record.counts))

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()


class ProgressSink:
    """A one-line status on a terminal (redrawn), or a line every 10 s when not a terminal."""

    name = "progress"

    def __init__(self, loop, stream=None):
        self.loop = loop
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._last = 0.0

    def handle(self, record) -> None:
        now = time.monotonic()
        if now - self._last < (0.5 if self.tty else 10.0):
            return
        self._last = now
        self.stream.write(("\r" if self.tty else "") + self.text() + ("" if self.tty else "\n"))
        self.stream.flush()

    def text(self) -> str:
        parts = []
        for camera in self.loop.cameras:
            c = camera.counts
            counts = f"people {c.people} goods {c.goods} in {c.people_in} out {c.people_out}" if c else "-"
            name = f"{camera.name}: " if len(self.loop.cameras) > 1 else ""
            parts.append(f"{name}frames {camera.stats.frames} {camera.stats.overall_fps:5.1f} fps {counts} "
                         f"dropped {camera.dropped}")
        return "  |  ".join(parts)

    def close(self) -> None:
        self.stream.write(("\r" if self.tty else "") + self.text() + "\n")
        self.stream.flush()


class StateSink:
    """Saves every camera's totals (``TotalsFile``) every ``interval`` seconds when they changed, and at the end."""

    name = "state"

    def __init__(self, totals_file, loop, interval: float = 5.0):
        self.file, self.loop, self.interval = totals_file, loop, interval
        self._saved = None
        self._at = time.monotonic()

    def _save(self, force: bool) -> None:
        if not force and time.monotonic() - self._at < self.interval:
            return
        self._at = time.monotonic()
        totals = {c.name: c.counter.totals() for c in self.loop.cameras}
        if totals != self._saved:
            self.file.save(totals)
            self._saved = totals

    def handle(self, record) -> None:
        self._save(False)

    def close(self) -> None:
        self._save(True)
