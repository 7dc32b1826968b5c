"""`edgecv bench-loop`: end-to-end vs inference frames/s, memory, and the web view's cost with a viewer."""
from __future__ import annotations

import json

import pytest

from conftest import run_cli


@pytest.mark.slow
@pytest.mark.tvm
def test_bench_loop_measures_loop_memory_and_viewer_cost(detector_artifact, opencv_data, tmp_path):
    result = run_cli("bench-loop", "--artifact", detector_artifact, "--video", opencv_data / "vtest.avi",
                     "--frames", 12, "--viewer-frames", 6, "--out", tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    saved = json.loads((tmp_path / "loop.json").read_text())
    assert saved == json.loads(result.stdout)
    assert saved["frames"] == 12 and saved["model"] == "ssd_512_mobilenet1.0_voc"
    assert 0 < saved["end_to_end_fps"] and 0 < saved["inference_fps"]
    assert saved["ratio"] == pytest.approx(saved["end_to_end_fps"] / saved["inference_fps"], abs=2e-3)
    assert saved["peak_rss_mb"] >= saved["rss_mb"]["end"] > 50
    viewer = saved["viewer"]
    assert viewer["rounds"] == 2 and viewer["frames_per_round"] == 6
    assert viewer["fps_without_viewer"] > 0 and viewer["fps_with_viewer"] > 0
    assert viewer["pictures_received"] > 0, "the viewer must really have received live pictures"
    assert viewer["slowdown_pct"] == pytest.approx(
        100 * (1 - viewer["fps_with_viewer"] / viewer["fps_without_viewer"]), abs=0.05)
    assert "Web view cost" in (tmp_path / "loop.md").read_text()
