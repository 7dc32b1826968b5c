"""Frame sources: video files, image folders/globs, cameras and network streams.

Files yield every frame in order (optionally paced to real time). Live sources (cameras, rtsp/http)
read in their own thread and keep only the latest frame: the detector never works on stale video,
and each frame it didn't get to is counted as dropped. A live source that fails reconnects with
exponential backoff; a file that can't be opened is an error naming the file.
"""
from __future__ import annotations

import glob
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from edgecv.edge.errors import SourceError

log = logging.getLogger("edgecv.source")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class Frame:
    image: np.ndarray  # BGR uint8 (H, W, 3)
    index: int
    timestamp: float   # seconds since the epoch
    source: str


class Source:
    name: str
    live: bool = False
    dropped: int = 0
    errors: int = 0
    connected: bool = True   # a live source: delivering frames (False while it reconnects)
    reconnects: int = 0

    def frames(self, stop: threading.Event) -> Iterator[Frame]:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass


def _usable(image) -> bool:
    return isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.size > 0


class VideoFileSource(Source):
    def __init__(self, path: str, realtime: bool = False):
        import cv2

        self.name, self.realtime = path, realtime
        if not Path(path).is_file():
            raise SourceError(f"video file not found: {path}", "check the path given to --source")
        self._cap = cv2.VideoCapture(path)
        if not self._cap.isOpened():
            raise SourceError(f"can't decode video {path}", "use a format OpenCV's FFmpeg reads (mp4, avi, mkv)")
        self.fps = self._cap.get(cv2.CAP_PROP_FPS) or 25.0

    def frames(self, stop):
        start, index = time.time(), 0
        while not stop.is_set():
            ok, image = self._cap.read()
            if not ok:
                return
            if not _usable(image):
                self.errors += 1
                log.warning("skipping unreadable frame %d of %s", index, self.name)
                index += 1
                continue
            if self.realtime:
                delay = start + index / self.fps - time.time()
                if delay > 0:
                    time.sleep(delay)
            yield Frame(image, index, time.time(), self.name)
            index += 1

    def close(self):
        self._cap.release()


class ImageFolderSource(Source):
    def __init__(self, pattern: str):
        path = Path(pattern)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files = sorted(Path(p) for p in glob.glob(pattern) if Path(p).suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SourceError(f"no images found at {pattern}", "pass a folder of JPEG/PNG files or a glob like 'dir/*.jpg'")
        self.name, self.files = pattern, files

    def frames(self, stop):
        import cv2

        for index, path in enumerate(self.files):
            if stop.is_set():
                return
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if not _usable(image):
                self.errors += 1
                log.warning("skipping unreadable image %s", path)
                continue
            yield Frame(image, index, time.time(), str(path))


class LiveSource(Source):
    """Camera or stream: a capture thread keeps the latest frame; reconnects with backoff."""

    live = True

    def __init__(self, target, name: str, max_backoff: float = 30.0, open_timeout: float = 10.0):
        self.target, self.name, self.max_backoff = target, name, max_backoff
        self._latest: Frame | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._cap = self._open()
        if self._cap is None:
            raise SourceError(f"can't open {name}", "check the camera index/device or the stream URL, and that it is reachable")
        self._thread = threading.Thread(target=self._capture, name="edgecv-capture", daemon=True)
        self._thread.start()

    def _open(self):
        import cv2

        cap = cv2.VideoCapture(self.target)
        if cap.isOpened():
            return cap
        cap.release()
        return None

    def _capture(self):
        backoff, index, cap = 1.0, 0, self._cap
        while not self._stop.is_set():
            ok, image = cap.read() if cap is not None else (False, None)
            if ok and _usable(image):
                backoff = 1.0
                self.connected = True
                with self._cond:
                    if self._latest is not None:
                        self.dropped += 1  # the detector didn't take the previous one in time
                    self._latest = Frame(image, index, time.time(), self.name)
                    self._cond.notify()
                index += 1
                continue
            if ok:
                self.errors += 1
                continue
            if cap is not None:
                cap.release()
            self.connected = False
            self.reconnects += 1
            log.warning("%s stopped delivering frames; reconnecting in %.0f s", self.name, backoff)
            if self._stop.wait(backoff):
                break
            backoff = min(backoff * 2, self.max_backoff)
            cap = self._open()
        if cap is not None:
            cap.release()

    def frames(self, stop):
        while not stop.is_set():
            with self._cond:
                self._cond.wait_for(lambda: self._latest is not None or stop.is_set(), timeout=0.5)
                frame, self._latest = self._latest, None
            if frame is not None:
                yield frame

    def close(self):
        self._stop.set()
        self._thread.join(timeout=5)


def open_source(spec: str, realtime: bool = False) -> Source:
    """``0`` / ``/dev/video0`` (camera), ``rtsp://`` / ``http(s)://`` (stream), a video file, a folder or glob."""
    if re.fullmatch(r"\d+", spec):
        return LiveSource(int(spec), f"camera {spec}")
    if spec.startswith("/dev/video"):
        if not os.path.exists(spec):
            raise SourceError(f"camera {spec} does not exist", "list cameras with `ls /dev/video*`")
        return LiveSource(spec, f"camera {spec}")
    if re.match(r"^(rtsp|rtmp|https?)://", spec):
        return LiveSource(spec, spec)
    path = Path(spec)
    if path.is_dir() or any(ch in spec for ch in "*?["):
        return ImageFolderSource(spec)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageFolderSource(spec)
    return VideoFileSource(spec, realtime=realtime)


def open_sources(cameras, realtime: bool = False) -> dict[str, Source]:
    """Camera name -> opened ``Source`` for each ``CameraConfig``; if one can't be opened, those already open are
    closed and the error names the camera."""
    opened: dict[str, Source] = {}
    try:
        for camera in cameras:
            try:
                opened[camera.name] = open_source(camera.url, realtime=realtime)
            except SourceError as exc:
                prefix = f"camera {camera.name}: " if len(cameras) > 1 else ""
                raise SourceError(prefix + exc.problem, exc.fix) from None
    except BaseException:
        for source in opened.values():
            source.close()
        raise
    return opened
