"""Inference backends behind one interface: ``Backend(folder)`` has ``.manifest`` and ``__call__(x) -> {name: array}``.

``tvm`` is the product. ``onnxruntime`` and ``mxnet`` run the uncompiled graph the artifact keeps with
``edgecv compile --keep-reference``: references for benchmarks and checks, imported only when chosen.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecv.edge.artifact import load_manifest
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
            "mxnet": (MxnetModel, {"hybridize": False}), "mxnet-hybrid": (MxnetModel, {"hybridize": True})}


def open_backend(name: str, folder: Path, threads: int | None = None):
    if name not in BACKENDS:
        raise ArtifactError(f"unknown backend {name!r}", f"use one of {', '.join(BACKENDS)}")
    cls, options = BACKENDS[name]
    return cls(folder) if cls is TvmModel else cls(folder, threads, **options)
