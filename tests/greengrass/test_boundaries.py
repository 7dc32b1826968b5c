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
            "from edgecv.edge.runtime import import_tvm_runtime\n"
            "import_tvm_runtime()\n"
            "import tvm\n"
            "print(json.dumps({'mods': sorted(sys.modules), 'runtime_only': bool(getattr(tvm.base, '_RUNTIME_ONLY', False))}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    mods = result["mods"]
    assert not [m for m in mods if m == "mxnet" or m.startswith(("mxnet.", "gluoncv", "onnx"))]
    assert not [m for m in mods if m.startswith(("tvm.relax", "tvm.s_tir.meta_schedule", "edgecv.compile"))]
    assert result["runtime_only"]


def test_cli_help_does_not_load_the_component_runtime():
    code = ("import sys, json\nimport edgecv.cli\nedgecv.cli.build_parser()\n"
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    mods = json.loads(out.stdout)
    assert "edgecv.greengrass.commands" in mods
    assert not [m for m in mods if m.startswith(("awsiot", "awscrt", "pydantic", "edgecv.greengrass.service"))]
