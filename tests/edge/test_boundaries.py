"""The edge runtime must run on a box without MXNet or the TVM compiler."""
import json
import subprocess
import sys


def test_edge_imports_no_mxnet_and_no_tvm_compiler():
    code = ("import sys, json\n"
            "import edgecv.cli, edgecv.edge.artifact, edgecv.edge.runtime, edgecv.edge.decode, edgecv.edge.preprocess\n"
            "edgecv.edge.runtime.import_tvm_runtime()\n"
            "import tvm\n"
            "print(json.dumps({'mods': sorted(sys.modules), 'runtime_only': bool(getattr(tvm.base, '_RUNTIME_ONLY', False))}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    mods = result["mods"]
    assert not [m for m in mods if m == "mxnet" or m.startswith(("mxnet.", "gluoncv", "onnx"))]
    assert not [m for m in mods if m.startswith(("tvm.relax", "tvm.s_tir.meta_schedule", "edgecv.compile"))]
    assert result["runtime_only"], "the edge runtime must load libtvm_runtime, not the compiler"
