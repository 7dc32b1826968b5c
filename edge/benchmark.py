"""Loop benchmark: end-to-end frames/s of the edge loop against the artifact's pure inference frames/s,
and memory over a long run. Results as JSON + Markdown; measured side by side in one process run."""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import threading
import time
from pathlib import Path

import numpy as np


def _status_mb(field: str) -> float:
    """A memory line of /proc/self/status in MB: VmRSS (now) or VmHWM (peak)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class _Cycle:
    """Frames of a video, repeated: a long run without a long video."""

    live, dropped, errors = False, 0, 0

    def __init__(self, frames, total):
        self.frames_, self.total, self.name = frames, total, "cycle"

    def frames(self, stop):
        from edgecv.edge.sources import Frame

        for i in range(self.total):
            if stop.is_set():
                return
            yield Frame(self.frames_[i % len(self.frames_)], i, time.time(), self.name)

    def close(self):
        pass


def run_benchmark(artifact: Path, video: Path, frames: int, out: Path, distinct: int = 50) -> dict:
    import cv2

    from edgecv.edge.config import RunConfig
    from edgecv.edge.detector import Detector
    from edgecv.edge.loop import EdgeLoop

    detector = Detector(artifact)
    cap = cv2.VideoCapture(str(video))
    images = []
    while len(images) < distinct:
        ok, image = cap.read()
        if not ok:
            break
        images.append(image)
    x = np.zeros(detector.manifest.input.shape, np.float32)
    detector.model(x)  # warm-up
    n_inf = min(frames, 30)
    start = time.perf_counter()
    for _ in range(n_inf):
        detector.model(x)
    inference_fps = n_inf / (time.perf_counter() - start)

    config = RunConfig(device="bench")
    loop = EdgeLoop(config, detector, _Cycle(images, frames), None)
    samples: list[tuple[int, float]] = []
    stop = threading.Event()

    def sample():
        while not stop.wait(0.5):
            samples.append((loop.stats.frames, _status_mb("VmRSS")))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    summary = loop.run(threading.Event())
    elapsed = time.perf_counter() - start
    stop.set()
    sampler.join()
    rss = [r for f, r in samples if f > frames * 0.1] or [_status_mb("VmRSS")]
    result = {
        "artifact": str(artifact), "model": detector.manifest.model, "input": list(detector.manifest.input.shape),
        "frames": summary.frames, "inference_fps": round(inference_fps, 3),
        "end_to_end_fps": round(summary.frames / elapsed, 3),
        "ratio": round(summary.frames / elapsed / inference_fps, 3),
        "rss_mb": {"after_10pct": round(rss[0], 1), "end": round(rss[-1], 1), "growth": round(rss[-1] - rss[0], 1)},
        "peak_rss_mb": round(_status_mb("VmHWM"), 1),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()},
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "loop.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "loop.md").write_text(
        f"# edge loop benchmark ({result['date']})\n\n{result['machine']['cpu']}, {result['machine']['cores']} cores\n\n"
        "| model | input | frames | inference fps | end-to-end fps | ratio | RSS after 10% | RSS end | peak RSS |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
        f"| {result['model']} | {result['input'][2]}x{result['input'][3]} | {result['frames']} | "
        f"{result['inference_fps']} | {result['end_to_end_fps']} | {result['ratio']} | "
        f"{result['rss_mb']['after_10pct']} MB | {result['rss_mb']['end']} MB | {result['peak_rss_mb']} MB |\n")
    return result
