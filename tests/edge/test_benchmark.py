"""`edgecv bench-loop`: end-to-end vs inference frames/s, memory, and the web view's cost with a viewer."""
from __future__ import annotations

import json

import pytest

from conftest import run_cli


@pytest.mark.slow
@pytest.mark.tvm
def test_bench_loop_measures_loop_memory_and_viewer_cost(detector_artifact, opencv_data, broker, tmp_path):
    from broker import Subscriber

    sub = Subscriber(broker.port, "edgecv/bench/main/counts")
    result = run_cli("bench-loop", "--artifact", detector_artifact, "--video", opencv_data / "vtest.avi",
                     "--frames", 12, "--rounds", 3, "--round-frames", 5, "--viewer-frames", 6, "--mqtt", broker.url,
                     "--streams", 2, "--out", tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    saved = json.loads((tmp_path / "loop-2streams.json").read_text())
    assert saved == json.loads(result.stdout)
    assert saved["frames"] == 12 and saved["model"] == "ssd_512_mobilenet1.0_voc" and saved["streams"] == 2
    paired = saved["paired_rounds"]
    assert paired["rounds"] == 3 and paired["frames_per_round"] == 5
    assert all(len(paired[k]) == 3 and min(paired[k]) > 0 for k in ("inference_fps", "end_to_end_fps", "ratios"))
    # the model alone both ways (one instance on all cores, two streams), the pure-inference figure the best of them
    ways = paired["inference_fps_by_way"]
    assert list(ways) == ["one instance", "2 streams"]
    assert paired["inference_fps"] == [max(a, b) for a, b in zip(ways["one instance"], ways["2 streams"])]
    # the loop with one stream and with two, in the same rounds; the figures reported are the two streams'
    by_loop = paired["end_to_end_fps_by_loop"]
    assert list(by_loop) == ["1 stream", "2 streams"] and by_loop["2 streams"] == paired["end_to_end_fps"]
    assert min(by_loop["1 stream"]) > 0 and paired["ratio_median_by_loop"]["2 streams"] == saved["ratio"]
    for e2e, alone, ratio in zip(paired["end_to_end_fps"], paired["inference_fps"], paired["ratios"]):
        assert ratio == pytest.approx(e2e / alone, abs=2e-3)
    assert saved["ratio"] == pytest.approx(sorted(paired["ratios"])[1], abs=1e-3)  # the median round
    assert saved["inference_fps"] == sorted(paired["inference_fps"])[1] and saved["long_run_end_to_end_fps"] > 0
    memory = saved["rss_mb"]
    assert saved["peak_rss_mb"] >= memory["end"] > 50
    frames = [f for f, _ in memory["curve"]]
    assert frames[0] == 0 and frames[-1] == 12 and frames == sorted(frames)
    assert memory["end"] == memory["curve"][-1][1] and memory["growth"] == pytest.approx(
        memory["end"] - memory["after_10pct"], abs=0.11)
    assert saved["published_to"] == broker.url
    assert sub.wait_for(lambda messages: messages, timeout=10), "the loop published nothing"
    sub.close()
    assert sub.json("/counts")[-1]["frame"] >= 1
    viewer = saved["viewer"]
    assert viewer["rounds"] == 2 and viewer["frames_per_round"] == 6
    assert viewer["fps_without_viewer"] > 0 and viewer["fps_with_viewer"] > 0
    assert viewer["pictures_received"] > 0, "the viewer must really have received live pictures"
    assert viewer["slowdown_pct"] == pytest.approx(
        100 * (1 - viewer["fps_with_viewer"] / viewer["fps_without_viewer"]), abs=0.05)
    report = (tmp_path / "loop-2streams.md").read_text()
    assert "Web view cost" in report and "In the same rounds, the loop in 1 stream" in report
    dropped = saved["machine"]["page_cache_dropped"]  # stated with the figures: it moves file-backed memory
    assert isinstance(dropped, bool) and ("dropped before measuring" if dropped else "as found (not root)") in report


def test_memory_trend_reads_growth_over_the_second_half():
    from edgecv.edge.benchmark import memory_trend

    flat = memory_trend([(f, 200.0 + (10.0 if f >= 100 else f / 10)) for f in range(0, 1001, 10)], 1000)
    assert flat["after_10pct"] == 210.0 and flat["middle"] == flat["end"] == 210.0
    assert flat["growth_second_half"] == 0 and flat["mb_per_1000_frames_second_half"] == 0
    leaking = memory_trend([(f, 200.0 + f / 100) for f in range(0, 1001, 10)], 1000)
    assert leaking["growth_second_half"] == 5.0
    assert leaking["mb_per_1000_frames_second_half"] == pytest.approx(10.0)
    assert len(leaking["curve"]) == 21 and leaking["curve"][-1] == (1000, 210.0)


@pytest.mark.slow
@pytest.mark.tvm
def test_bench_loop_cameras_one_process_against_separate_ones(detector_artifact, opencv_data, tmp_path):
    result = run_cli("bench-loop", "--artifact", detector_artifact, "--video", opencv_data / "vtest.avi",
                     "--cameras", 2, "--frames", 6, "--rounds", 2, "--out", tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    saved = json.loads((tmp_path / "loop-2cameras.json").read_text())
    assert saved == json.loads(result.stdout) and saved["cameras"] == 2 and saved["frames_per_camera"] == 6
    one, separate = saved["one_process"], saved["separate_processes"]
    assert len(one["rounds"]) == len(separate["rounds"]) == 2
    assert all(set(r["fps_per_camera"]) == {"cam1", "cam2"} for r in one["rounds"] + separate["rounds"])
    assert all(len(r["peak_rss_mb_each"]) == 2 for r in separate["rounds"])
    assert 0 < one["loop_cpu_ms_per_frame"] < one["process_cpu_ms_per_frame"]  # the model is beyond the loop
    # one process holds one model; two hold two: less than the sum of two, more than one alone
    assert 0.5 < saved["rss_ratio"] < 1.0
    assert saved["rss_ratio"] == round(one["peak_rss_mb"] / separate["peak_rss_mb_sum"], 3)
    assert "| one `edgecv run`, 2 sources |" in (tmp_path / "loop-2cameras.md").read_text()
