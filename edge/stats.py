"""Loop statistics: frames/s, latency percentiles over an interval, a cumulative latency histogram."""
from __future__ import annotations

import time
from collections import deque

import numpy as np

# Upper bounds (seconds) of the latency histogram, Prometheus-style (cumulative counts, +Inf last).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class LoopStats:
    def __init__(self, interval_cap: int = 10_000):
        self.frames = 0
        self.errors = 0
        self._latencies: deque[float] = deque(maxlen=interval_cap)  # bounded even if nobody resets it
        self._interval_frames = 0
        self._since = time.monotonic()
        self._started = self._since
        self._recent: deque[float] = deque(maxlen=30)  # monotonic times of the last frames
        self.histogram = np.zeros(len(LATENCY_BUCKETS) + 1, np.int64)  # per bucket, not cumulative
        self.latency_sum = 0.0
        self.last_frame_at: float | None = None

    def frame(self, latency_s: float) -> None:
        self.frames += 1
        self._interval_frames += 1
        self._latencies.append(latency_s)
        self.histogram[np.searchsorted(LATENCY_BUCKETS, latency_s)] += 1
        self.latency_sum += latency_s
        self.last_frame_at = time.monotonic()
        self._recent.append(self.last_frame_at)

    def snapshot(self, dropped: int, queued: int, reset: bool = True) -> dict:
        now = time.monotonic()
        lat = np.asarray(self._latencies or [0.0]) * 1000
        out = {"frames": self.frames, "fps": round(self._interval_frames / max(now - self._since, 1e-9), 2),
               "latency_ms": {"p50": round(float(np.percentile(lat, 50)), 2),
                              "p99": round(float(np.percentile(lat, 99)), 2)},
               "dropped": int(dropped), "errors": int(self.errors), "queued": int(queued)}
        if reset:
            self._latencies.clear()
            self._interval_frames, self._since = 0, now
        return out

    def latencies_ms(self) -> np.ndarray:
        return np.asarray(self._latencies, float) * 1000

    @property
    def overall_fps(self) -> float:
        return self.frames / max(time.monotonic() - self._started, 1e-9)

    @property
    def recent_fps(self) -> float:
        """Frames/s over the last 30 frames (0 when fewer than two)."""
        if len(self._recent) < 2:
            return 0.0
        return (len(self._recent) - 1) / max(self._recent[-1] - self._recent[0], 1e-9)


def combined(snapshots: list[dict], latencies_ms: list[np.ndarray], queued: int) -> dict:
    """One snapshot over several cameras' (``snapshot(reset=False)`` each, and their interval's latencies)."""
    lat = np.concatenate([*latencies_ms, np.zeros(0)]) if latencies_ms else np.zeros(0)
    lat = lat if lat.size else np.zeros(1)
    return {"frames": sum(s["frames"] for s in snapshots), "fps": round(sum(s["fps"] for s in snapshots), 2),
            "latency_ms": {"p50": round(float(np.percentile(lat, 50)), 2), "p99": round(float(np.percentile(lat, 99)), 2)},
            "dropped": sum(s["dropped"] for s in snapshots), "errors": sum(s["errors"] for s in snapshots),
            "queued": int(queued)}
