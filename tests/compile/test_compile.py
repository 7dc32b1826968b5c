"""Compile real GluonCV models with real TVM builds, verified against MXNet on real images."""
from __future__ import annotations

import json
import tarfile
import time

import numpy as np
import pytest

from conftest import REPO, run_cli, verify_lines
from edgecv.edge.artifact import read_manifest
from edgecv.edge.elf import read_elf

pytestmark = [pytest.mark.tvm, pytest.mark.mxnet]


@pytest.mark.slow
@pytest.mark.parametrize("model,size", [("ssd_512_mobilenet1.0_voc", None), ("yolo3_mobilenet1.0_coco", None),
                                        ("ssd_512_mobilenet1.0_voc", 128)])
def test_compile_and_verify_detector(model, size, tmp_path, opencv_data):
    out = tmp_path / "art"
    result = run_cli("compile", model, "--target", "x86_64", "--random-weights", "0", "--out", out, "--verify",
                     *(["--input-size", str(size)] if size else []))
    assert result.returncode == 0, result.stderr[-3000:]
    lines = verify_lines(result.stdout)
    assert len(lines) == 4 and all(line.startswith("ok ") for line in lines), result.stdout
    # every image had detections to compare, and all of them matched
    for line in lines:
        matched = int(line.split("matched ")[1].split(",")[0])
        assert matched > 0 and "differing 0" in line, line
    manifest = read_manifest(out)
    assert manifest.model == model and manifest.task == "detection" and manifest.target.arch == "x86_64"
    assert [o.name for o in manifest.outputs] == ["boxes", "scores"]
    assert len(manifest.classes) == (20 if "voc" in model else 80)
    assert read_elf(out / manifest.library).arch == "x86_64"
    with tarfile.open(tmp_path / "art.tar.gz") as tar:
        assert {"art/manifest.json", "art/model.so"} <= set(tar.getnames())


@pytest.mark.slow
def test_classifier_compiles_and_verifies(tmp_path, opencv_data):
    out = tmp_path / "cls"
    result = run_cli("compile", "mobilenetv2_1.0", "--target", "x86_64", "--random-weights", "1", "--out", out,
                     "--verify")
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = read_manifest(out)
    assert manifest.task == "classification" and len(manifest.classes) == 1000
    assert manifest.outputs[0].shape == (1, 1000)
    assert all(line.startswith("ok ") for line in verify_lines(result.stdout))


@pytest.mark.slow
def test_rerun_with_same_inputs_is_quick_and_identical(tmp_path, artifacts):
    first = artifacts("mobilenetv2_1.0")  # builds (or finds) the cached build
    start = time.perf_counter()
    result = run_cli("compile", "mobilenetv2_1.0", "--target", "x86_64", "--random-weights", "0", "--out",
                     tmp_path / "again")
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr[-2000:]
    assert "reusing cached build" in result.stderr
    assert json.loads((tmp_path / "again/manifest.json").read_text())["files"] == read_manifest(first).files
    assert elapsed < 60, f"a cached compile took {elapsed:.0f} s"


@pytest.mark.slow
def test_weights_file_made_by_the_test_is_used(tmp_path, opencv_data):
    """--weights loads a real .params file: the artifact reproduces that network, not random weights."""
    import mxnet as mx
    from gluoncv import model_zoo

    from edgecv.compile.weights import randomize

    net = model_zoo.get_model("mobilenetv2_1.0", pretrained=False)
    randomize(net, (1, 3, 224, 224), seed=7)
    params = tmp_path / "mine.params"
    net.save_parameters(str(params))
    out = tmp_path / "art"
    result = run_cli("compile", "mobilenetv2_1.0", "--target", "x86_64", "--weights", params, "--out", out, "--verify")
    assert result.returncode == 0, result.stderr[-2000:]
    from edgecv.edge.runtime import TvmModel

    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    expected = mx.nd.softmax(net(mx.nd.array(x))).asnumpy()
    got = TvmModel(out)(x)["probabilities"]
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-5)
    from edgecv.edge.artifact import sha256_file

    assert read_manifest(out).weights == f"file:mine.params sha256:{sha256_file(params)}"


@pytest.mark.slow
def test_exported_checkpoint_with_nms_compiles_and_verifies(tmp_path, opencv_data):
    """A user's net.export() pair: the graph is cut before box_nms and NMS runs in the edge decoder."""
    from gluoncv import model_zoo

    from edgecv.compile.weights import randomize

    net = model_zoo.get_model("ssd_512_mobilenet1.0_voc", pretrained=False, pretrained_base=False)
    randomize(net, (1, 3, 256, 256), seed=3)
    net.hybridize()
    import mxnet as mx

    net(mx.nd.zeros((1, 3, 256, 256)))
    net.export(str(tmp_path / "mine"))
    out = tmp_path / "art"
    result = run_cli("compile", tmp_path / "mine-symbol.json", "--target", "x86_64", "--input-size", "256",
                     "--out", out, "--verify")
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = read_manifest(out)
    assert manifest.decode.kind == "id_score_box" and len(manifest.classes) == 20
    assert all(line.startswith("ok ") and "differing 0" in line for line in verify_lines(result.stdout))


# ---- bad input: one clear line, exit code != 0, nothing left in --out ----

def _params_file(tmp_path, content: bytes):
    path = tmp_path / "bad.params"
    path.write_bytes(content)
    return path


BAD = [
    (["no_such_model", "--target", "x86_64", "--random-weights", "0"], "unknown model 'no_such_model'"),
    (["mobilenetv2_1.0", "--target", "pdp11", "--random-weights", "0"], "unknown target 'pdp11'"),
    (["mobilenetv2_1.0", "--target", "x86_64", "--weights", "/nonexistent.params"], "weights file not found"),
    (["mobilenetv2_1.0", "--target", "x86_64", "--weights", "CORRUPT"], "not a readable MXNet .params file"),
    (["mobilenetv2_1.0", "--target", "x86_64", "--random-weights", "0", "--input-size", "100"],
     "can't take input size 100"),
    (["mobilenetv2_1.0", "--target", "x86_64"], "no weights chosen"),
    (["/nonexistent/x-symbol.json", "--target", "x86_64"], "symbol file not found"),
    (["mobilenetv2_1.0", "--target", "armv7", "--random-weights", "0", "--int8"],
     "--int8 has no kernel for target armv7 (armv7l): compile without --int8, or use a target with one"),
    (["mobilenetv2_1.0", "--target", "x86-64-v3", "--random-weights", "0", "--int8", "--tuning-records",
      str(REPO / "models/records/ssd_512_mobilenet1.0_voc/cascadelake-int8")],
     "tuned for the avx512-vnni int8 kernel; this build uses avx2"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[m for _, m in BAD])
def test_bad_input_is_one_clear_line(args, message, tmp_path):
    args = [str(_params_file(tmp_path, b"\x00garbage" * 10)) if a == "CORRUPT" else a for a in args]
    out = tmp_path / "out"
    result = run_cli("compile", *args, "--out", out)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_missing_cross_compiler_names_the_package(tmp_path):
    result = run_cli("compile", "mobilenetv2_1.0", "--target", "aarch64", "--random-weights", "0", "--out",
                     tmp_path / "out", env={"PATH": str(tmp_path)})
    assert result.returncode != 0
    assert "aarch64-linux-gnu-g++ not found" in result.stderr and "apt-get install g++-aarch64-linux-gnu" in result.stderr
    assert not (tmp_path / "out").exists()


def test_pretrained_offline_says_what_to_do(tmp_path):
    result = run_cli("compile", "mobilenetv2_1.0", "--target", "x86_64", "--pretrained", "--out", tmp_path / "out",
                     env={"MXNET_HOME": str(tmp_path / "mxhome")}, timeout=300)
    assert result.returncode != 0
    assert "could not fetch pretrained weights" in result.stderr and "--weights FILE.params" in result.stderr
