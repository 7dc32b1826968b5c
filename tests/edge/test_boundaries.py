"""The edge runtime must run on a box without MXNet or the TVM compiler."""
import json
import subprocess
import sys


def test_edge_imports_no_mxnet_and_no_tvm_compiler():
    code = ("import sys, json\n"
            "import edgecv.cli, edgecv.edge.artifact, edgecv.edge.runtime, edgecv.edge.decode, edgecv.edge.preprocess\n"
            "edgecv.edge.runtime.tvm_runtime()\n"
            "libs = [line.split()[-1] for line in open('/proc/self/maps') if '.so' in line]\n"
            "print(json.dumps({'mods': sorted(sys.modules), 'libs': sorted(set(libs))}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    mods = result["mods"]
    assert not [m for m in mods if m == "mxnet" or m.startswith(("mxnet.", "gluoncv", "onnx"))]
    assert not [m for m in mods if m.startswith(("tvm.relax", "tvm.s_tir.meta_schedule", "edgecv.compile"))]
    libs = [lib.rsplit("/", 1)[-1] for lib in result["libs"]]
    assert "libtvm_runtime.so" in libs and "libtvm.so" not in libs, "the edge runtime must load libtvm_runtime, not the compiler"
    assert "tvm" not in mods, "the tvm package (IR, targets: ~50 MB) is not needed to run an artifact"
