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

from edgecv.edge.memory import drop_page_cache, page_cache_note, status_mb


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
            loop = EdgeLoop(config, detector, _LoopedVideo(video, frames))
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


def paired_rounds(alone: dict, loops: dict, rounds: int, frames: int, runs: int = 40) -> dict:
    """End-to-end frames/s against the model alone, in rounds: the model alone ``runs`` times in each of the ways
    in ``alone`` (name -> ``fn(runs)`` -> frames/s: one instance on all cores, parallel streams), the loop over
    ``frames`` frames in each of the ways in ``loops`` (name -> ``fn(frames)`` -> frames done; in turns, the order
    reversed every other round), the model alone again. Each round's ratios are taken against the fastest way's
    mean of the measurements around it (the artifact's best pure inference), and the median round reported: this
    machine's speed drifts within a minute, a ratio of measurements far apart in time is mostly drift.
    ``end_to_end_fps``/``ratios``: the last of ``loops``, the one measured."""
    by_way: dict[str, list[float]] = {name: [] for name in alone}
    fps_by_loop: dict[str, list[float]] = {name: [] for name in loops}
    ratios_by_loop: dict[str, list[float]] = {name: [] for name in loops}
    inference = []
    for round_ in range(rounds):
        before = {name: fn(runs) for name, fn in alone.items()}
        fps = {}
        for name in (list(loops) if round_ % 2 == 0 else list(loops)[::-1]):
            start = time.perf_counter()
            done = loops[name](frames)
            fps[name] = done / (time.perf_counter() - start)
        for name, fn in alone.items():
            by_way[name].append(round((before[name] + fn(runs)) / 2, 3))
        best = max(way[-1] for way in by_way.values())
        inference.append(best)
        for name in loops:
            fps_by_loop[name].append(round(fps[name], 3))
            ratios_by_loop[name].append(round(fps[name] / best, 4))
    measured = list(loops)[-1]
    result = {"rounds": rounds, "frames_per_round": frames, "model_runs_around_each": runs,
              "inference_fps": inference, "inference_fps_by_way": by_way, "end_to_end_fps": fps_by_loop[measured],
              "ratios": ratios_by_loop[measured], "ratio_median": round(float(np.median(ratios_by_loop[measured])), 3)}
    if len(loops) > 1:
        result["end_to_end_fps_by_loop"] = fps_by_loop
        result["ratio_median_by_loop"] = {name: round(float(np.median(r)), 3) for name, r in ratios_by_loop.items()}
    return result


def model_alone(detector, x, streams=None):
    """``fn(runs)`` -> the model's frames/s alone on input ``x``: in this thread (one instance, all cores), or
    spread over ``streams`` (``DetectionStreams``), as many runs under way as there are streams."""
    def one(runs: int) -> float:
        start = time.perf_counter()
        for _ in range(runs):
            detector.model(x)
        return runs / (time.perf_counter() - start)

    def spread(runs: int) -> float:
        start = time.perf_counter()
        for future in [streams.infer(x) for _ in range(runs)]:
            future.result()
        return runs / (time.perf_counter() - start)

    return one if streams is None else spread


def _loop(config, detector, sources, publisher=None):
    """An ``EdgeLoop`` that publishes as `edgecv run` does when ``publisher`` is given."""
    from edgecv.edge.loop import EdgeLoop, publishing_sinks

    loop = EdgeLoop(config, detector, sources)
    for sink in publishing_sinks(publisher, loop):
        loop.sinks.add(sink)
    return loop


def run_benchmark(artifact: Path, video: Path, frames: int, out: Path, viewer_frames: int = 0,
                  mqtt: str | None = None, progress=None, rounds: int = 6, round_frames: int = 300,
                  streams: int = 1) -> dict:
    """End-to-end (the loop in ``streams`` detection streams) against pure inference frames/s (the best of one
    model instance on all cores and, if ``streams`` > 1, as many streams alone) in ``rounds`` paired rounds of
    ``round_frames`` frames, then
    ``frames`` frames of ``video`` (played again as often as needed) through the whole loop with its RSS sampled
    twice a second; publishing to ``mqtt`` if given, as `edgecv run` does; ``progress(frames_done)`` if given."""
    from edgecv.edge.config import RunConfig
    from edgecv.edge.detector import Detector
    from edgecv.edge.loop import open_publisher

    page_cache_dropped = drop_page_cache()  # the libraries and artifact as read from disk (see drop_page_cache)
    detector = Detector(artifact)
    source = _LoopedVideo(video, frames)
    first = next(source.frames(threading.Event()))  # a clear error now if the video can't be read
    x, _ = detector.prepare(first.image, detector.input_buffer())  # read in place, as the loop's inputs are
    for _ in range(10):  # warm-up: the first runs fault in the model's memory
        detector.model(x)

    config = RunConfig(device="bench", streams=streams, **({"mqtt": {"url": mqtt}} if mqtt else {}))
    publisher = open_publisher(config)
    alone = {"one instance": model_alone(detector, x)}
    if streams > 1:  # (the loop's own streams, between its rounds)
        alone[f"{streams} streams"] = model_alone(detector, x, detector.streams(streams))
        alone[f"{streams} streams"](10)  # warm-up: each stream's first runs fault in its instance's memory

    def loop_round(streams_: int):
        def run(n: int) -> int:
            looped = config.replace(streams=streams_)
            return _loop(looped, detector, _LoopedVideo(video, n), publisher).run(threading.Event()).frames
        return run

    # with streams, one stream's loop too, in the same rounds: what the streams gain, measured side by side
    loops = {f"{n} stream{'s' if n > 1 else ''}": loop_round(n) for n in sorted({1, streams})}
    try:
        paired = paired_rounds(alone, loops, rounds, round_frames)
        loop = _loop(config, detector, source, publisher)
        samples: list[tuple[int, float]] = [(0, status_mb("VmRSS"))]
        stop = threading.Event()

        def sample():
            while not stop.wait(0.5):
                samples.append((loop.cameras[0].stats.frames, status_mb("VmRSS")))
                if progress is not None:
                    progress(loop.cameras[0].stats.frames)

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
        "video": str(video), "published_to": mqtt, "streams": streams,
        "inference_fps": round(float(np.median(paired["inference_fps"])), 3),
        "end_to_end_fps": round(float(np.median(paired["end_to_end_fps"])), 3), "ratio": paired["ratio_median"],
        "paired_rounds": paired,
        "frames": summary.frames, "long_run_end_to_end_fps": round(summary.frames / elapsed, 3),
        "rss_mb": memory_trend(samples, summary.frames),
        "peak_rss_mb": round(status_mb("VmHWM"), 1),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "page_cache_dropped": page_cache_dropped},
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if viewer_frames:
        result["viewer"] = viewer_cost(detector, video, viewer_frames)
    out.mkdir(parents=True, exist_ok=True)
    name = "loop" if streams == 1 else f"loop-{streams}streams"
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    p = result["paired_rounds"]
    ways = ", ".join(f"{way} {np.median(fps):.1f}" for way, fps in p["inference_fps_by_way"].items())
    by_loop = p.get("ratio_median_by_loop", {})
    fps_by_loop = p.get("end_to_end_fps_by_loop", {})
    side_by_side = "".join(f" In the same rounds, the loop in {other}: {np.median(fps_by_loop[other]):.1f} fps end to "
                           f"end, ratio {by_loop[other]}." for other in list(by_loop)[:-1])
    (out / f"{name}.md").write_text(
        f"# edge loop benchmark ({result['date']})\n\n{result['machine']['cpu']}, {result['machine']['cores']} cores; "
        f"{page_cache_note(page_cache_dropped)}\n\n"
        "| model | input | streams | inference fps (best way alone) | end-to-end fps | ratio (median of rounds) | "
        "rounds |\n|---|---|---|---|---|---|---|\n"
        f"| {result['model']} | {result['input'][2]}x{result['input'][3]} | {streams} | {result['inference_fps']} | "
        f"{result['end_to_end_fps']} | **{result['ratio']}** | {p['rounds']} x {p['frames_per_round']} frames: "
        f"{', '.join(str(r) for r in p['ratios'])} |\n"
        f"\nFrames decoded from {Path(result['video']).name}, played again as often as needed. Each round: the "
        f"compiled model alone {p['model_runs_around_each']} times on the video's first frame in each way it can "
        f"run alone ({ways} frames/s, medians), the loop over {p['frames_per_round']} frames in {streams} "
        "detection stream(s) (decoding, preprocessing, inference, decoding of the outputs, NMS, tracking and "
        "counting), the model alone again; the round's ratio is its end-to-end frames/s over the fastest way's mean "
        "of the model-alone measurements around it (the machine's speed drifts; only measurements close in time "
        f"compare). Inference and end-to-end fps: medians over the rounds.{side_by_side}\n"
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


def _edgecv_run(artifact: Path, sources: list[str], frames: int, streams: int, env: dict):
    """``edgecv run`` started as a user starts it (``--source`` per camera, ``--max-frames`` each)."""
    import subprocess
    import sys

    args = [sys.executable, "-m", "edgecv", "run", "--artifact", str(artifact), "--max-frames", str(frames),
            "--streams", str(streams)]
    for source in sources:
        args += ["--source", source]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _finish(proc) -> dict:
    """The JSON summary of an ``edgecv run`` and its CPU seconds (user + system, from the kernel's rusage)."""
    from edgecv.edge.errors import EdgecvError

    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    out, err = proc.stdout.read(), proc.stderr.read()
    if proc.returncode != 0:
        raise EdgecvError(f"edgecv run failed in the benchmark (exit {proc.returncode}): {err.strip()[-400:]}",
                          "run the same command by hand to see why")
    summary = json.loads(out.strip().splitlines()[-1])
    summary["cpu_s"] = usage.ru_utime + usage.ru_stime
    return summary


def cameras_benchmark(artifact: Path, video: Path, cameras: int, frames: int, out: Path, streams: int = 1,
                      rounds: int = 2) -> dict:
    """``cameras`` sources (``video`` each) through one ``edgecv run`` against as many separate ``edgecv run``
    processes started together, in interleaved rounds: frames/s per camera, peak RSS (one process's against the
    sum of the separate ones'), the loop thread's CPU per frame (tracking, counting, sinks: beyond the model),
    each reader's (decoding, preprocessing) and the whole process's CPU per frame. Writes
    ``loop-<cameras>cameras.{json,md}`` in ``out``."""
    env = {**os.environ, "HOME": os.environ.get("HOME", "/root")}
    names = [f"cam{i + 1}" for i in range(cameras)]
    one_rounds, separate_rounds = [], []
    page_cache_dropped = drop_page_cache()
    for round_ in range(rounds):
        for mode in (("one", "separate") if round_ % 2 == 0 else ("separate", "one")):
            start = time.perf_counter()
            if mode == "one":
                summary = _finish(_edgecv_run(artifact, [f"{n}={video}" for n in names], frames, streams, env))
                wall = time.perf_counter() - start
                one_rounds.append({
                    "wall_s": round(wall, 2), "fps_per_camera": {n: round(frames / wall, 2) for n in names},
                    "fps_per_camera_own": {n: c["fps"] for n, c in summary["cameras"].items()},
                    "peak_rss_mb": summary["peak_rss_mb"], "loop_cpu_ms_per_frame": summary["loop_cpu_ms_per_frame"],
                    "reader_cpu_ms_per_frame": {n: c["reader_cpu_ms_per_frame"] for n, c in summary["cameras"].items()},
                    "process_cpu_ms_per_frame": round(1000 * summary["cpu_s"] / summary["frames"], 3)})
            else:
                procs = [_edgecv_run(artifact, [str(video)], frames, streams, env) for _ in names]
                summaries = [_finish(p) for p in procs]
                wall = time.perf_counter() - start
                separate_rounds.append({
                    "wall_s": round(wall, 2), "fps_per_camera": {n: round(frames / wall, 2) for n in names},
                    "peak_rss_mb_each": [s["peak_rss_mb"] for s in summaries],
                    "peak_rss_mb_sum": round(sum(s["peak_rss_mb"] for s in summaries), 1),
                    "loop_cpu_ms_per_frame_each": [s["loop_cpu_ms_per_frame"] for s in summaries],
                    "process_cpu_ms_per_frame": round(1000 * sum(s["cpu_s"] for s in summaries)
                                                      / sum(s["frames"] for s in summaries), 3)})
    med = lambda values: round(float(np.median(values)), 3)  # noqa: E731
    one_rss, separate_rss = med([r["peak_rss_mb"] for r in one_rounds]), med([r["peak_rss_mb_sum"] for r in separate_rounds])
    from edgecv.edge.artifact import read_manifest

    result = {
        "artifact": str(artifact), "model": read_manifest(artifact).model, "video": str(video), "cameras": cameras,
        "frames_per_camera": frames, "streams": streams, "rounds": rounds,
        "one_process": {"fps_per_camera": med([np.mean(list(r["fps_per_camera"].values())) for r in one_rounds]),
                        "peak_rss_mb": one_rss,
                        "loop_cpu_ms_per_frame": med([r["loop_cpu_ms_per_frame"] for r in one_rounds]),
                        "reader_cpu_ms_per_frame": med([np.mean(list(r["reader_cpu_ms_per_frame"].values()))
                                                        for r in one_rounds]),
                        "process_cpu_ms_per_frame": med([r["process_cpu_ms_per_frame"] for r in one_rounds]),
                        "rounds": one_rounds},
        "separate_processes": {"fps_per_camera": med([np.mean(list(r["fps_per_camera"].values()))
                                                      for r in separate_rounds]),
                               "peak_rss_mb_sum": separate_rss,
                               "process_cpu_ms_per_frame": med([r["process_cpu_ms_per_frame"] for r in separate_rounds]),
                               "rounds": separate_rounds},
        "rss_ratio": round(one_rss / separate_rss, 3) if separate_rss else None,
        "goals": {"loop_cpu_ms_per_frame_at_most": 1.5, "rss_ratio_at_most": 0.4},
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
                    "page_cache_dropped": page_cache_dropped},
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    one, separate = result["one_process"], result["separate_processes"]
    out.mkdir(parents=True, exist_ok=True)
    name = f"loop-{cameras}cameras"
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{name}.md").write_text(
        f"# {cameras} cameras: one process against {cameras} ({result['date']})\n\n"
        f"{result['machine']['cpu']}, {result['machine']['cores']} cores, load average at the end "
        f"{result['machine']['load_average_at_end']}; {page_cache_note(page_cache_dropped)}.\n\n"
        f"{result['model']}, {Path(video).name} as each of {cameras} cameras, {frames} frames each, {streams} "
        f"detection stream(s) per process; {rounds} interleaved rounds, medians.\n\n"
        "| | frames/s per camera | peak RSS MB | loop CPU ms/frame (beyond the model) | reader CPU ms/frame | "
        "process CPU ms/frame |\n|---|---|---|---|---|---|\n"
        f"| one `edgecv run`, {cameras} sources | {one['fps_per_camera']} | {one['peak_rss_mb']} | "
        f"**{one['loop_cpu_ms_per_frame']}** | {one['reader_cpu_ms_per_frame']} | {one['process_cpu_ms_per_frame']} |\n"
        f"| {cameras} separate `edgecv run` | {separate['fps_per_camera']} | {separate['peak_rss_mb_sum']} (sum) | "
        f"{med([med(r['loop_cpu_ms_per_frame_each']) for r in separate_rounds])} | | "
        f"{separate['process_cpu_ms_per_frame']} |\n\n"
        f"Peak RSS of the one process over the sum of the separate ones: **{result['rss_ratio']}** (goal: at most "
        "0.4). Loop CPU: the loop thread's own CPU time (tracking, counting, publishing, the sinks) over the frames "
        "it handled (goal: at most 1.5 ms); reader CPU: each camera's reader thread (video decoding, "
        "preprocessing into the model's input); process CPU: everything, the model included, from the kernel's "
        "rusage. Frames/s per camera: frames over the wall time of the round, start-up (loading the model) "
        "included.\n")
    return result
