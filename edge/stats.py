"""Loop statistics over an interval: frames/s, latency percentiles, drops and errors."""
from __future__ import annotations

import time

import numpy as np


class LoopStats:
    def __init__(self):
        self.frames = 0
        self.errors = 0
        self._latencies: list[float] = []
        self._interval_frames = 0
        self._since = time.monotonic()
        self._started = self._since

    def frame(self, latency_s: float) -> None:
        self.frames += 1
        self._interval_frames += 1
        self._latencies.append(latency_s)

    def snapshot(self, dropped: int, queued: int, reset: bool = True) -> dict:
        now = time.monotonic()
        lat = np.asarray(self._latencies or [0.0]) * 1000
        out = {"frames": self.frames, "fps": round(self._interval_frames / max(now - self._since, 1e-9), 2),
               "latency_ms": {"p50": round(float(np.percentile(lat, 50)), 2),
                              "p99": round(float(np.percentile(lat, 99)), 2)},
               "dropped": int(dropped), "errors": int(self.errors), "queued": int(queued)}
        if reset:
            self._latencies, self._interval_frames, self._since = [], 0, now
        return out

    @property
    def overall_fps(self) -> float:
        return self.frames / max(time.monotonic() - self._started, 1e-9)
