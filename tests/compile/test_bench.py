"""`edgecv bench` on a small real model: the JSON follows its schema and every number was measured."""
import json
import os
import subprocess
import sys
from importlib import resources

import jsonschema
import numpy as np
import pytest

from conftest import run_cli

pytestmark = [pytest.mark.slow, pytest.mark.tvm, pytest.mark.mxnet]


def test_bench_measures_every_backend_side_by_side(tmp_path, opencv_data):
    out = tmp_path / "bench"
    result = run_cli("bench", "ssd_512_mobilenet1.0_voc", "--input-size", "128", "--rounds", "4",
                     "--backends", "mxnet,mxnet-hybrid,onnxruntime,openvino,openvino-int8,tvm,tvm-tuned,tvm-direct,"
                     "tvm-int8",
                     "--e2e-frames", "2",
                     "--out", out, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "bench-ssd_512_mobilenet1.0_voc-x86_64.json").read_text())
    schema = json.loads(resources.files("edgecv.compile").joinpath("bench.schema.json").read_text())
    jsonschema.validate(report, schema)
    rows = {r["backend"]: r for r in report["results"]}
    # MetaSchedule's convolutions need records, and there are none for this input size: skipped, saying what to do
    assert rows["tvm-tuned"]["status"] == "skipped" and "edgecv tune" in rows["tvm-tuned"]["reason"]
    assert report["tuning_records"] is None
    # what `edgecv compile` builds runs without records (direct convolutions, int8's fixed schedules around the dot
    # product): float32 and int8 both measured
    assert report["direct_records"] is None and report["int8_records"] is None
    ran = [r for r in report["results"] if r["status"] == "ok"]
    assert {r["backend"] for r in ran} == {"mxnet", "mxnet-hybrid", "onnxruntime", "openvino", "openvino-int8", "tvm",
                                           "tvm-direct", "tvm-int8"}
    for r in ran:  # the summary numbers come from the measured rounds, not from anywhere else
        assert len(r["latencies_ms"]) == 4
        assert r["p50_ms"] == pytest.approx(np.percentile(r["latencies_ms"], 50), abs=0.01)
        assert r["cpu_after_call_ms"] >= 0  # measured while waiting for its threads to sleep (compile/settle.py)
        assert r["end_to_end_fps"] and r["end_to_end_fps"] > 0
        assert r["end_to_end_peak_rss_mb"] > 100  # Python, OpenCV, the loop and the backend, in `edgecv run`
        if not r["backend"].endswith("int8"):  # (random weights: int8 finds other boxes; the real model's are
            assert r["detections"] == r["detections_matched"] and r["same_classes"]  # checked in tests/models)
            assert r["max_abs_diff"] < 1.0  # boxes in input pixels, scores in [0, 1]
    for int8 in ("openvino-int8", "tvm-int8"):
        assert rows[int8]["detections"] == 100 and rows[int8]["max_abs_diff"] > 1.0, int8
    assert report["openvino_quantization"].startswith("NNCF 2.14.1 post-training quantization")
    assert report["machine"]["versions"]["openvino"] == "2024.6.0" and report["machine"]["isa"]
    assert len({r["peak_rss_mb"] for r in ran}) == len(ran), "each backend's memory is measured in its own process"
    assert rows["tvm"]["end_to_end_peak_rss_mb"] < rows["mxnet"]["end_to_end_peak_rss_mb"]
    assert rows["mxnet"]["max_abs_diff"] == 0.0
    assert report["machine"]["cores"] >= 1 and report["gflop_per_frame"] > 0
    md = (out / "bench-ssd_512_mobilenet1.0_voc-x86_64.md").read_text()
    for backend in ("openvino", "openvino-int8", "onnxruntime", "tvm", "tvm-direct", "tvm-int8"):
        assert f"\n| {backend} | {rows[backend]['p50_ms']} | " in md
    ratios = md.split("p50 latency ratios")[1]
    assert "| artifact | / mxnet-hybrid | / onnxruntime | / openvino | / openvino-int8 |" in ratios
    assert f"| {rows['tvm']['p50_ms'] / rows['openvino']['p50_ms']:.2f} |" in ratios.split("| tvm |")[1]
    assert f"ISA: {' '.join(report['machine']['isa'])}" in md and "openvino-int8: NNCF" in md
    assert (out / "bench-ssd_512_mobilenet1.0_voc-x86_64.png").stat().st_size > 1000


def test_unknown_backend_is_one_clear_line(tmp_path):
    result = run_cli("bench", "ssd_512_mobilenet1.0_voc", "--backends", "tvm,caffe", "--out", tmp_path)
    assert result.returncode == 2 and "unknown backend(s) caffe" in result.stderr


def test_records_summary_says_what_the_tuned_artifact_applied():
    from edgecv.compile.bench import records_summary
    from edgecv.compile.pipeline import records_root

    records = records_root("ssd_512_mobilenet1.0_voc", None, 512) / "x86-64-v3"
    summary = records_summary(records)
    meta = json.loads((records / "edgecv-tuning.json").read_text())
    assert summary["folder"] == "ssd_512_mobilenet1.0_voc/x86-64-v3"
    assert summary["tasks_with_records"] == sum(1 for t in meta["tasks"].values() if t.get("best_us")) > 30
    assert summary["trials"] >= 32 * summary["tasks_with_records"]
    assert summary["tuned_on"] and all("AMD" in m or "Intel" in m for m in summary["tuned_on"])


def test_isa_cap_says_how_each_runtime_is_held_to_the_level():
    """x86-64-v3 (AVX2) on an AVX2-only CPU: nothing to hide; on an AVX-512 CPU that can fault on CPUID: its AVX-512
    features hidden from every backend; one that can't: oneDNN's variable only, ONNX Runtime named as not held."""
    from edgecv.compile.bench import _cap_env, isa_cap

    backends = ["mxnet", "onnxruntime", "openvino", "tvm-int8"]
    assert isa_cap("x86_64", backends) is None
    avx2 = frozenset({"avx", "avx2", "fma"})
    assert isa_cap("x86-64-v3", backends, avx2) == {
        "onednn_max_cpu_isa": "AVX2", "cpuid_hidden": None, "cpuid_why_not": None,
        "capped": ["mxnet", "onnxruntime", "openvino"], "not_capped": []}
    no_fault = isa_cap("x86-64-v3", backends, avx2 | {"avx512f", "avx512bw", "avx_vnni"})
    assert no_fault["cpuid_hidden"] is None and "cpuid_fault" in no_fault["cpuid_why_not"]
    assert no_fault["capped"] == ["mxnet", "openvino"] and no_fault["not_capped"] == ["onnxruntime"]
    assert _cap_env(no_fault, "onnxruntime") == _cap_env(no_fault, "tvm-int8") == _cap_env(None, "openvino") == {}
    assert _cap_env(no_fault, "openvino")["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    faulting = isa_cap("x86-64-v3", backends, avx2 | {"avx512f", "avx512bw", "avx_vnni", "cpuid_fault"})
    assert faulting["cpuid_hidden"] == ["avx512f", "avx512bw", "avx_vnni"] and faulting["not_capped"] == []
    assert "avx_vnni" not in (isa_cap("x86-64-v3-vnni", backends, avx2 | {"avx512f", "avx_vnni", "cpuid_fault"})
                              ["cpuid_hidden"])


def test_isa_cap_holds_openvino_to_the_targets_avx2(tmp_path):
    """Benchmarking x86-64-v3 on this CPU: OpenVINO (oneDNN) runs AVX2 kernels, as the artifact does, held by what
    this CPU allows: the CPUID mask alone where it can fault on CPUID (the same mask that holds ONNX Runtime), else
    oneDNN's own variable."""
    from onnx import TensorProto, helper, numpy_helper, save

    from edgecv.compile.bench import ONEDNN_BACKENDS, _cap_env, isa_cap

    cap = isa_cap("x86-64-v3", ["openvino"])
    env = _cap_env(cap, "openvino")
    if cap["cpuid_hidden"]:  # the mask must do it on its own
        env = {k: v for k, v in env.items() if "ISA" not in k}
    else:
        assert "openvino" in ONEDNN_BACKENDS and env["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    w = numpy_helper.from_array(np.full((32, 32, 3, 3), 0.01, np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 56, 56])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "conv.onnx")
    probe = ("import sys, numpy as np, openvino as ov\n"
             "c = ov.Core().compile_model(sys.argv[1], 'CPU')\n"
             "c.create_infer_request().infer({0: np.ones((1, 32, 56, 56), np.float32)})\n"
             "print(' '.join(op.get_rt_info()['primitiveType'].astype(str) for op in c.get_runtime_model().get_ops()"
             " if 'primitiveType' in op.get_rt_info()))\n")
    result = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "conv.onnx")], capture_output=True, text=True,
                            env={**os.environ, **env}, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    kernels = result.stdout.split()
    assert any("avx2" in k for k in kernels) and not any("avx512" in k for k in kernels), kernels
