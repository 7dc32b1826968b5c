"""Inference backends behind one interface: ``Backend(folder)`` has ``.manifest`` and ``__call__(x) -> {name: array}``.

``tvm`` is the product. ``onnxruntime``, ``openvino`` and ``mxnet`` run the uncompiled graph the artifact keeps
with ``edgecv compile --keep-reference``: references for benchmarks and checks, imported only when chosen.
``openvino-int8`` runs OpenVINO's own post-training int8 quantization of that graph, which ``edgecv bench`` writes
beside it (``compile/openvino_int8.py``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecv.edge.artifact import load_manifest, sha256_file
from edgecv.edge.errors import ArtifactError
from edgecv.edge.runtime import TvmModel


class _Reference:
    kind: str

    def __init__(self, folder: Path, threads: int | None = None, **options):
        self.folder = Path(folder)
        self.options = options
        self.manifest = load_manifest(self.folder)
        ref = self.manifest.reference or {}
        if self.kind not in {k.split("_")[0] for k in ref}:
            raise ArtifactError(f"{folder} has no uncompiled {self.kind} graph",
                                "recompile it with `edgecv compile ... --keep-reference`")
        self.names = [o.name for o in self.manifest.outputs]
        self._load(ref, threads)

    def input_buffer(self) -> np.ndarray:
        """An array to preprocess frames into (the TVM backend's are read in place; these are copied)."""
        return np.empty(self.manifest.input.shape, np.float32)

    def replica(self):
        raise ArtifactError(f"parallel streams run compiled artifacts only, not the {self.kind} reference",
                            "set streams to 1 with a reference backend")


class OnnxRuntimeModel(_Reference):
    kind = "onnx"

    def _load(self, ref, threads):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ArtifactError("onnxruntime is not installed", "pip install onnxruntime") from None
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self._session = ort.InferenceSession(str(self.folder / ref["onnx"]), options,
                                             providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.names, self._session.run(None, {self._input: x})))


OPENVINO_INSTALL = "pip install 'edgecv[bench]' (openvino==2024.6.0; nncf too for openvino-int8)"
OPENVINO_INT8 = "reference-openvino-int8"  # .xml, .bin and .json (what it was made from) beside reference.onnx


class OpenVinoModel(_Reference):
    """OpenVINO's CPU plug-in on the kept ONNX graph (or, with ``int8=True``, on its NNCF-quantized IR), for
    latency (one stream) in float32: no bf16 or fp16 substitution on CPUs that have them."""

    kind = "onnx"

    def _load(self, ref, threads):
        try:
            import openvino as ov
        except ImportError:
            raise ArtifactError("OpenVINO is not installed", OPENVINO_INSTALL) from None
        path = self._int8_ir(ref) if self.options.get("int8") else self.folder / ref["onnx"]
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        compiled = ov.Core().compile_model(str(path), "CPU", config)
        self._request = compiled.create_infer_request()
        self._outputs = compiled.outputs

    def _int8_ir(self, ref) -> Path:
        """The quantized IR, checked against what it says it was made from: this artifact's ONNX graph."""
        import json

        meta_path = self.folder / f"{OPENVINO_INT8}.json"
        if not meta_path.is_file():
            raise ArtifactError(f"{self.folder} has no OpenVINO int8 model ({OPENVINO_INT8}.xml)",
                                "`edgecv bench MODEL --backends openvino-int8` makes it with NNCF")
        meta = json.loads(meta_path.read_text())
        if meta.get("onnx_sha256") != self.manifest.files[ref["onnx"]]:
            raise ArtifactError(f"{OPENVINO_INT8}.xml in {self.folder} was quantized from another ONNX graph",
                                "delete it and make it again with `edgecv bench MODEL --backends openvino-int8`")
        for suffix in ("xml", "bin"):
            if sha256_file(self.folder / f"{OPENVINO_INT8}.{suffix}") != meta["files"][suffix]:
                raise ArtifactError(f"checksum mismatch for {OPENVINO_INT8}.{suffix} in {self.folder}",
                                    "delete it and make it again with `edgecv bench MODEL --backends openvino-int8`")
        return self.folder / f"{OPENVINO_INT8}.xml"

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        result = self._request.infer({0: x})
        return {name: result[port] for name, port in zip(self.names, self._outputs)}


class MxnetModel(_Reference):
    kind = "mxnet"

    def _load(self, ref, threads):
        try:
            import mxnet as mx
        except ImportError:
            raise ArtifactError("MXNet is not installed", "pip install 'edgecv[compile]' (x86-64 only)") from None
        from mxnet import gluon

        self._mx = mx
        self._block = gluon.SymbolBlock.imports(str(self.folder / ref["mxnet_symbol"]), ["data"],
                                                str(self.folder / ref["mxnet_params"]))
        if self.options.get("hybridize", True):
            self._block.hybridize(static_alloc=True, static_shape=True)

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        out = self._block(self._mx.nd.array(x))
        out = out if isinstance(out, (list, tuple)) else [out]
        return dict(zip(self.names, (o.asnumpy() for o in out)))


# name -> (class, options). ``mxnet`` runs the graph as MXNet's imperative executor would without
# hybridize(); ``mxnet-hybrid`` is the hybridized (static graph) form users deploy.
BACKENDS = {"tvm": (TvmModel, {}), "onnxruntime": (OnnxRuntimeModel, {}),
            "openvino": (OpenVinoModel, {}), "openvino-int8": (OpenVinoModel, {"int8": True}),
            "mxnet": (MxnetModel, {"hybridize": False}), "mxnet-hybrid": (MxnetModel, {"hybridize": True})}


def open_backend(name: str, folder: Path, threads: int | None = None):
    if name not in BACKENDS:
        raise ArtifactError(f"unknown backend {name!r}", f"use one of {', '.join(BACKENDS)}")
    cls, options = BACKENDS[name]
    return cls(folder) if cls is TvmModel else cls(folder, threads, **options)
