"""The real detectors through the one compile path, verified on real images, scored on the labelled set, and
counting people in vtest.avi. Real TVM builds (untuned: ~1 s a frame for the SSD, ~3 s for NanoDet)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import OPENCV_DATA, run_cli, verify_lines
from edgecv.edge.artifact import read_manifest

pytestmark = [pytest.mark.slow, pytest.mark.tvm, pytest.mark.mxnet]


@pytest.mark.parametrize("model,reference,outputs", [
    ("ssd_300_mobilenetv2_oid", "mxnet", ["box_encodings", "scores"]),
    ("nanodet_416_coco", "onnxruntime", ["scores", "box_distribution"]),
])
def test_compile_verify_real_model(model, reference, outputs, tmp_path, opencv_data):
    out = tmp_path / "art"
    result = run_cli("compile", model, "--target", "x86_64", "--out", out, "--verify")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    lines = verify_lines(result.stdout)
    assert len(lines) == 4 and all(line.startswith("ok ") for line in lines), result.stdout
    for line in lines:  # real weights: real detections on every picture, all the same after NMS
        matched = int(line.split("matched ")[1].split(",")[0])
        assert f"detections {reference} " in line and matched > 0 and "differing 0" in line, line
    manifest = read_manifest(out)
    assert [o.name for o in manifest.outputs] == outputs
    assert manifest.decode.kind == ("ssd_anchors" if model.startswith("ssd") else "gfl")
    assert manifest.weights.startswith("file:") and "sha256:" in manifest.weights


def test_compile_accepts_an_onnx_detector_with_its_decoder(tmp_path, real_artifacts):
    from conftest import REPO

    onnx = REPO / "models/nanodet_416_coco/nanodet_416_coco.onnx"
    missing = run_cli("compile", onnx, "--target", "x86_64", "--out", tmp_path / "x")
    assert missing.returncode == 2 and "--decoder" in missing.stderr
    out = tmp_path / "nano"
    result = run_cli("compile", onnx, "--decoder", "nanodet", "--target", "x86_64", "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = read_manifest(out)
    assert manifest.model == "nanodet_416_coco" and len(manifest.classes) == 80 and manifest.groups == "coco"
    assert manifest.input.color == "BGR" and manifest.input.shape == (1, 3, 416, 416)
    zoo = read_manifest(real_artifacts("nanodet_416_coco"))
    assert manifest.decode == zoo.decode and manifest.files["model.so"] == zoo.files["model.so"]


@pytest.mark.parametrize("model", ["ssd_300_mobilenetv2_oid", "nanodet_416_coco"])
def test_eval_scores_compiled_as_source(model, few_labels, tmp_path):
    """Precision/recall on labelled pictures: TVM, ONNX Runtime and (for the SSD) MXNet with GluonCV's own
    decoding and NMS find exactly the same true and false positives."""
    report_file = tmp_path / "report.json"
    result = run_cli("eval", model, "--labels", few_labels, "--out", report_file, "--quiet")
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    report = json.loads(report_file.read_text())
    ran = {r["backend"]: r for r in report["results"] if r["status"] == "ok"}
    assert set(ran) == ({"mxnet", "onnxruntime", "tvm"} if model.startswith("ssd") else {"onnxruntime", "tvm"})
    people = [r["groups"]["people"] for r in ran.values()]
    assert all(p == people[0] for p in people)
    assert people[0]["labelled"] >= 10 and people[0]["recall"] >= 0.7 and people[0]["precision"] >= 0.7, people[0]
    assert "people P" in result.stdout


def test_people_found_in_vtest(real_artifacts, opencv_data):
    """The default detector finds people in most frames of vtest.avi, as `make demo` shows."""
    import cv2

    from edgecv.edge.config import DetectConfig
    from edgecv.edge.counting import GroupMap
    from edgecv.edge.detector import Detector

    detector = Detector(real_artifacts("ssd_300_mobilenetv2_oid"), DetectConfig(score_threshold=0.4))
    groups = GroupMap(detector.manifest.classes, detector.manifest.groups)
    capture = cv2.VideoCapture(str(OPENCV_DATA / "vtest.avi"))
    counts = []
    for frame in range(15, 795, 90):  # 9 frames, none of them in the labelled set
        capture.set(cv2.CAP_PROP_POS_FRAMES, frame)
        ok, image = capture.read()
        assert ok
        found = detector(image)
        found = found[found.scores >= 0.4]
        counts.append(int(np.sum(groups.groups(found.class_ids) == "people")))
    assert sum(c > 0 for c in counts) >= 8 and np.mean(counts) >= 2, counts


def test_openvino_int8_finds_what_float32_finds(real_artifacts, opencv_data, tmp_path, monkeypatch):
    """OpenVINO's own int8 of the real detector (NNCF on the kept ONNX graph, calibrated on vtest.avi) finds the
    same people as the float32 graph in ONNX Runtime, on frames it was not calibrated on."""
    import shutil

    from edgecv.compile.openvino_int8 import write_openvino_int8
    from edgecv.edge.backends import open_backend
    from edgecv.edge.decode import decode_detections
    from edgecv.edge.preprocess import preprocess

    monkeypatch.setenv("EDGECV_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "oid"
    shutil.copytree(real_artifacts("ssd_300_mobilenetv2_oid"), folder)
    write_openvino_int8(folder, log=lambda m: None)
    int8, ref = (open_backend(name, folder, threads=2) for name in ("openvino-int8", "onnxruntime"))

    def detect(model, image):
        x, _ = preprocess(image, ref.manifest.input)
        return decode_detections(model(x), ref.manifest.decode)

    _finds_what_float32_finds(opencv_data, lambda image: detect(ref, image), lambda image: detect(int8, image))


def _finds_what_float32_finds(opencv_data, want, got):
    """On six vtest.avi frames int8 calibration didn't read, ``got`` matches 90 % of what ``want`` finds (score 0.4,
    same class, IoU 0.5), and ``want`` finds at least 30 objects."""
    import cv2

    from edgecv.edge.matching import match

    capture = cv2.VideoCapture(str(opencv_data / "vtest.avi"))
    found = matched = 0
    for frame in (0, 150, 300, 450, 600, 750):  # calibration reads frames 12, 37, 62, ...
        capture.set(cv2.CAP_PROP_POS_FRAMES, frame)
        ok, image = capture.read()
        assert ok
        a, b = want(image), got(image)
        a, b = a[a.scores >= 0.4], b[b.scores >= 0.4]
        found += len(a)
        matched += sum(a.class_ids[i] == b.class_ids[j] for i, j in match(a, b, iou_threshold=0.5).pairs)
    assert found >= 30 and matched >= 0.9 * found, (matched, found)


def _compile_int8(target: str, out, monkeypatch, mattr: list[str] | None = None) -> str:
    """Compile the real detector int8 for ``target`` in this process (``mattr``: the target's features replaced);
    returns what compile logged."""
    import dataclasses
    import io

    from edgecv.compile import targets
    from edgecv.compile.pipeline import CompileRequest, compile_model
    from edgecv.compile.progress import Progress
    from edgecv.compile.weights import Weights

    if mattr is not None:
        preset = targets.TARGETS[target]
        monkeypatch.setitem(targets.TARGETS, target, dataclasses.replace(preset, tvm={**preset.tvm, "mattr": mattr}))
    log = io.StringIO()
    compile_model(CompileRequest(model="ssd_300_mobilenetv2_oid", target=target, out=out, weights=Weights(),
                                 int8=True, use_cache=False), Progress(0, stream=log))  # a cached build logs less
    return log.getvalue()


def test_avx_vnni_applies_the_avx2_records_with_its_dot_product(real_artifacts, opencv_data, tmp_path, monkeypatch):
    """The avx-vnni kernel (AVX-VNNI: Core N, Zen 5) has no records of its own: it applies the AVX2 kernel's with its
    dot product, warning so. Every int8 kernel that has a schedule with avx2 has one with it (the same number get
    the direct and basic schedules), its library runs vpdpbusd on 256-bit registers and nothing of AVX2's pair sums, and it
    finds the people float32 finds. A CPU without AVX-VNNI but with AVX-512 VNNI and VL (Zen 4) runs its EVEX twin
    (the same instruction, EVEX-encoded); one with neither only builds and reads it."""
    import re
    import subprocess

    from conftest import EVEX_TWINS
    from edgecv.compile.quantize import INT8_KERNELS
    from edgecv.edge.config import DetectConfig
    from edgecv.edge.cpu import host_cpu_flags
    from edgecv.edge.detector import Detector

    flags = host_cpu_flags()
    needs, mattr = EVEX_TWINS["avx-vnni"]
    twin = "avx_vnni" not in flags and needs <= flags
    logs = {kernel: _compile_int8(target, tmp_path / kernel, monkeypatch,
                                  mattr if twin and kernel == "avx-vnni" else None)
            for kernel, target in (("avx2", "x86-64-v3"), ("avx-vnni", "x86-64-v3-vnni"))}
    assert "tuned for the avx2 int8 kernel and applied with avx-vnni's dot product" in logs["avx-vnni"]
    own = {k: [line.replace(INT8_KERNELS[k].intrin, "DOT") for line in log.splitlines()
               if "direct schedule" in line or "basic schedule" in line] for k, log in logs.items()}
    assert any("int8 ones with DOT" in line for line in own["avx2"]) and own["avx-vnni"] == own["avx2"], own
    code = subprocess.run(["objdump", "-d", str(tmp_path / "avx-vnni/model.so")], capture_output=True, text=True,
                          check=True).stdout
    assert re.search(r"vpdpbusd\s.*%ymm", code) and "vpmaddubsw" not in code
    assert twin or "zmm" not in code  # the twin's target has AVX-512F, which LLVM uses elsewhere
    if not (twin or "avx_vnni" in flags):
        return
    int8, ref = (Detector(folder, DetectConfig(score_threshold=0.4))
                 for folder in (tmp_path / "avx-vnni", real_artifacts("ssd_300_mobilenetv2_oid")))
    _finds_what_float32_finds(opencv_data, ref, int8)
