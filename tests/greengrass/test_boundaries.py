"""greengrass/ wraps edge/ for the nucleus: it never imports compile/, MXNet or TVM's compiler, and the
component's runtime loads TVM runtime-only."""
import json
import subprocess
import sys


def test_greengrass_imports_no_compiler():
    code = ("import sys, json\n"
            "import edgecv.cli\n"
            "edgecv.cli.build_parser()\n"
            "import edgecv.greengrass.service, edgecv.greengrass.build, edgecv.greengrass.local, edgecv.greengrass.ipc\n"
            "import edgecv.greengrass.devserver, edgecv.greengrass.commands\n"
            "from edgecv.edge.runtime import tvm_runtime\n"
            "tvm_runtime()\n"
            "libs = [line.split()[-1] for line in open('/proc/self/maps') if '.so' in line]\n"
            "print(json.dumps({'mods': sorted(sys.modules), 'libs': sorted(set(libs))}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    mods = result["mods"]
    assert not [m for m in mods if m == "mxnet" or m.startswith(("mxnet.", "gluoncv", "onnx"))]
    assert not [m for m in mods if m.startswith(("tvm.relax", "tvm.s_tir.meta_schedule", "edgecv.compile"))]
    libs = [lib.rsplit("/", 1)[-1] for lib in result["libs"]]
    assert "libtvm_runtime.so" in libs and "libtvm.so" not in libs and "tvm" not in mods


def test_cli_help_does_not_load_the_component_runtime():
    code = ("import sys, json\nimport edgecv.cli\nedgecv.cli.build_parser()\n"
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    mods = json.loads(out.stdout)
    assert "edgecv.greengrass.commands" in mods
    assert not [m for m in mods if m.startswith(("awsiot", "awscrt", "pydantic", "edgecv.greengrass.service"))]
