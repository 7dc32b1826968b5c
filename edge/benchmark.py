"""Loop benchmark: end-to-end frames/s of the edge loop against the artifact's pure inference frames/s, in
paired rounds, and memory over a long run. Results as JSON + Markdown; measured side by side in one process."""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import threading
import time
from pathlib import Path

import numpy as np

from edgecv.edge.memory import status_mb


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class _LoopedVideo:
    """A video file played again and again, decoded as `edgecv run` decodes it (read ahead in the loop's
    thread): a long run from a short video, with the decoding in the measurement."""

    live, dropped, errors = False, 0, 0

    def __init__(self, video: Path, total: int):
        self.video, self.total, self.name = Path(video), total, str(video)

    def frames(self, stop):
        from edgecv.edge.errors import SourceError
        from edgecv.edge.sources import Frame, VideoFileSource

        index = 0
        while index < self.total and not stop.is_set():
            source = VideoFileSource(str(self.video))
            start = index
            try:
                for frame in source.frames(stop):
                    if index >= self.total:
                        return
                    yield Frame(frame.image, index, frame.timestamp, self.name)
                    index += 1
            finally:
                source.close()
            if index == start:
                raise SourceError(f"no frames could be read from {self.video}", "pass a readable video file with --video")

    def close(self):
        pass


class _Watcher:
    """Someone watching the live view: reads the MJPEG stream and counts the pictures that arrive."""

    def __init__(self, url: str):
        self.url, self.pictures = url, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self):
        import urllib.request

        with urllib.request.urlopen(self.url, timeout=30) as stream:
            while not self._stop.is_set():
                chunk = stream.read1(65536)
                if not chunk:
                    return
                self.pictures += chunk.count(b"--frame\r\n")

    def start(self) -> "_Watcher":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def viewer_cost(detector, video: Path, frames: int, rounds: int = 2) -> dict:
    """End-to-end frames/s without and with someone watching the web view's live video, in interleaved
    rounds (without, with, without, with, ...) so machine noise hits both alike."""
    from edgecv.edge.config import RunConfig
    from edgecv.edge.loop import EdgeLoop
    from edgecv.edge.web import LiveView, WebServer

    config = RunConfig(device="bench")
    fps: dict[str, list[float]] = {"without": [], "with": []}
    pictures = 0
    for _ in range(rounds):
        for mode in ("without", "with"):
            loop = EdgeLoop(config, detector, _LoopedVideo(video, frames), None)
            server = watcher = None
            if mode == "with":
                server = WebServer(LiveView(loop, None, config.http), "127.0.0.1", 0, None).start()
                watcher = _Watcher(server.url + "stream.mjpg").start()
            start = time.perf_counter()
            summary = loop.run(threading.Event())
            fps[mode].append(summary.frames / (time.perf_counter() - start))
            if server is not None:
                watcher.stop()
                server.stop()
                pictures += watcher.pictures
    without, with_ = float(np.median(fps["without"])), float(np.median(fps["with"]))
    return {"frames_per_round": frames, "rounds": rounds, "fps_without_viewer": round(without, 3),
            "fps_with_viewer": round(with_, 3), "slowdown_pct": round(100 * (1 - with_ / without), 2),
            "preview_fps_cap": config.http.preview_fps, "pictures_received": pictures}


def memory_trend(samples: list[tuple[int, float]], frames: int, points: int = 20) -> dict:
    """What the RSS samples (frame, MB) say about memory over a run: after warm-up (10% of the frames), at half
    way and at the end; the growth over the second half, per 1,000 frames (flat memory: about 0); and the curve
    (one sample per 1/``points`` of the run) to plot or read."""
    def at(fraction: float) -> tuple[int, float]:
        """The first sample at or past ``fraction`` of the run (frame, MB)."""
        return next(((f, mb) for f, mb in samples if f >= frames * fraction), samples[-1])

    curve, step = [], frames / points
    for f, mb in samples:
        if not curve or f >= curve[-1][0] + step:
            curve.append((f, round(mb, 1)))
    last_frame, end = samples[-1]
    if curve[-1] != (last_frame, round(end, 1)):
        curve.append((last_frame, round(end, 1)))
    (_, warm), (middle_frame, middle) = at(0.1), at(0.5)
    half_frames = max(last_frame - middle_frame, 1)
    return {"after_10pct": round(warm, 1), "middle": round(middle, 1), "end": round(end, 1),
            "growth": round(end - warm, 1), "growth_second_half": round(end - middle, 1),
            "mb_per_1000_frames_second_half": round((end - middle) / half_frames * 1000, 3), "curve": curve}


def paired_rounds(detector, x, loop_round, rounds: int, frames: int, runs: int = 40) -> dict:
    """End-to-end frames/s against the model alone, in rounds: the model alone ``runs`` times on ``x``, the loop
    over ``frames`` frames (``loop_round(frames)`` -> frames done), the model alone again. Each round's ratio is
    taken against the mean of the model-alone measurements around it, and the median round reported: this
    machine's speed drifts by 20% within a minute, a ratio of measurements far apart in time is mostly drift."""
    def alone() -> float:
        start = time.perf_counter()
        for _ in range(runs):
            detector.model(x)
        return runs / (time.perf_counter() - start)

    inference, end_to_end, ratios = [], [], []
    for _ in range(rounds):
        before = alone()
        start = time.perf_counter()
        done = loop_round(frames)
        fps = done / (time.perf_counter() - start)
        mean = (before + alone()) / 2
        inference.append(round(mean, 3))
        end_to_end.append(round(fps, 3))
        ratios.append(round(fps / mean, 4))
    return {"rounds": rounds, "frames_per_round": frames, "model_runs_around_each": runs,
            "inference_fps": inference, "end_to_end_fps": end_to_end, "ratios": ratios,
            "ratio_median": round(float(np.median(ratios)), 3)}


def run_benchmark(artifact: Path, video: Path, frames: int, out: Path, viewer_frames: int = 0,
                  mqtt: str | None = None, progress=None, rounds: int = 6, round_frames: int = 300) -> dict:
    """End-to-end against pure inference frames/s in ``rounds`` paired rounds of ``round_frames`` frames, then
    ``frames`` frames of ``video`` (played again as often as needed) through the whole loop with its RSS sampled
    twice a second; publishing to ``mqtt`` if given, as `edgecv run` does; ``progress(frames_done)`` if given."""
    from edgecv.edge.config import RunConfig
    from edgecv.edge.detector import Detector
    from edgecv.edge.loop import EdgeLoop, open_publisher

    detector = Detector(artifact)
    source = _LoopedVideo(video, frames)
    first = next(source.frames(threading.Event()))  # a clear error now if the video can't be read
    x, _ = detector.prepare(first.image)
    for _ in range(10):  # warm-up: the first runs fault in the model's memory
        detector.model(x)

    config = RunConfig(device="bench", **({"mqtt": {"url": mqtt}} if mqtt else {}))
    publisher = open_publisher(config)

    def loop_round(n: int) -> int:
        return EdgeLoop(config, detector, _LoopedVideo(video, n), publisher).run(threading.Event()).frames

    try:
        paired = paired_rounds(detector, x, loop_round, rounds, round_frames)
        loop = EdgeLoop(config, detector, source, publisher)
        samples: list[tuple[int, float]] = [(0, status_mb("VmRSS"))]
        stop = threading.Event()

        def sample():
            while not stop.wait(0.5):
                samples.append((loop.stats.frames, status_mb("VmRSS")))
                if progress is not None:
                    progress(loop.stats.frames)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start = time.perf_counter()
        try:
            summary = loop.run(threading.Event())
        finally:
            elapsed = time.perf_counter() - start
            stop.set()
            sampler.join()
    finally:
        if publisher is not None:
            publisher.flush(timeout=10)
            publisher.stop(flush_timeout=0)
    samples.append((summary.frames, status_mb("VmRSS")))
    result = {
        "artifact": str(artifact), "model": detector.manifest.model, "input": list(detector.manifest.input.shape),
        "video": str(video), "published_to": mqtt,
        "inference_fps": float(np.median(paired["inference_fps"])),
        "end_to_end_fps": float(np.median(paired["end_to_end_fps"])), "ratio": paired["ratio_median"],
        "paired_rounds": paired,
        "frames": summary.frames, "long_run_end_to_end_fps": round(summary.frames / elapsed, 3),
        "rss_mb": memory_trend(samples, summary.frames),
        "peak_rss_mb": round(status_mb("VmHWM"), 1),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()},
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if viewer_frames:
        result["viewer"] = viewer_cost(detector, video, viewer_frames)
    out.mkdir(parents=True, exist_ok=True)
    (out / "loop.json").write_text(json.dumps(result, indent=2) + "\n")
    p = result["paired_rounds"]
    (out / "loop.md").write_text(
        f"# edge loop benchmark ({result['date']})\n\n{result['machine']['cpu']}, {result['machine']['cores']} cores\n\n"
        "| model | input | inference fps | end-to-end fps | ratio (median of rounds) | rounds |\n|---|---|---|---|---|---|\n"
        f"| {result['model']} | {result['input'][2]}x{result['input'][3]} | {result['inference_fps']} | "
        f"{result['end_to_end_fps']} | **{result['ratio']}** | {p['rounds']} x {p['frames_per_round']} frames: "
        f"{', '.join(str(r) for r in p['ratios'])} |\n"
        f"\nFrames decoded from {Path(result['video']).name}, played again as often as needed. Each round: the "
        f"compiled model alone {p['model_runs_around_each']} times on the video's first frame, the loop over "
        f"{p['frames_per_round']} frames (decoding, preprocessing, inference, decoding of the outputs, NMS, "
        "tracking and counting), the model alone again; the round's ratio is its end-to-end frames/s over the mean "
        "of the two model-alone measurements around it (the machine's speed drifts; only measurements close in "
        "time compare). Inference and end-to-end fps: medians over the rounds.\n"
        "\n## Memory over a long run\n\n"
        "| frames | end-to-end fps | RSS after 10% | RSS half way | RSS end | growth, 2nd half | peak RSS |\n"
        "|---|---|---|---|---|---|---|\n"
        f"| {result['frames']} | {result['long_run_end_to_end_fps']} | {result['rss_mb']['after_10pct']} MB | "
        f"{result['rss_mb']['middle']} MB | {result['rss_mb']['end']} MB | "
        f"{result['rss_mb']['mb_per_1000_frames_second_half']:+.2f} MB per 1,000 frames | "
        f"{result['peak_rss_mb']} MB |\n"
        + (f"\nCounts published to {mqtt} through the durable outbox, as `edgecv run` does.\n" if mqtt else
           "\nNo publishing (pass --mqtt URL to include it).\n")
        + ("" if not viewer_frames else
           "\nWeb view cost (interleaved rounds of {frames_per_round} frames, preview capped at {preview_fps_cap} "
           "fps): {fps_without_viewer} fps without a viewer, {fps_with_viewer} fps with one watching the live "
           "video ({slowdown_pct}% slower; {pictures_received} pictures received).\n".format(**result["viewer"])))
    return result
