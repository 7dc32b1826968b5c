"""Run a compiled artifact with the TVM runtime alone (no compiler, no MXNet).

``TVM_USE_RUNTIME_LIB=1`` makes ``import tvm`` load the 3 MB runtime library instead of the
259 MB compiler: set before the first import of tvm in the process. In a process that already
imported the full TVM (the compile step's --verify) the loaded TVM is used as it is.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from edgecv.edge.artifact import Manifest, load_manifest
from edgecv.edge.errors import ArtifactError, reason


def import_tvm_runtime():
    first = "tvm" not in sys.modules
    previous = os.environ.get("TVM_USE_RUNTIME_LIB")
    if first and previous is None:
        os.environ["TVM_USE_RUNTIME_LIB"] = "1"  # only for this import: child processes must not inherit it
    try:
        import tvm
        import tvm.runtime
        from tvm.runtime import vm as _vm  # noqa: F401
    except ImportError as exc:
        raise ArtifactError(f"the TVM runtime is not installed ({exc})",
                            "pip install 'edgecv[edge]' (apache-tvm)") from None
    finally:
        if first and previous is None:
            os.environ.pop("TVM_USE_RUNTIME_LIB", None)
    return tvm


class TvmModel:
    """A checked, loaded artifact: ``__call__(x)`` returns its outputs as numpy arrays, by name."""

    def __init__(self, folder: Path, arch: str | None = None):
        self.folder = Path(folder)
        self.manifest: Manifest = load_manifest(self.folder, arch)
        tvm = import_tvm_runtime()
        self._tvm = tvm
        self._device = tvm.cpu(0)
        library = self.folder / self.manifest.library
        try:
            module = tvm.runtime.load_module(str(library))
            self._vm = tvm.runtime.vm.VirtualMachine(module, self._device)
            self._main = self._vm["main"]
            self._params = self._load_params()
        except Exception as exc:  # TVM raises its own error types for a library it can't load
            raise ArtifactError(f"TVM could not load {library} ({reason(exc)})",
                                "recompile the artifact for this machine") from None

    def _load_params(self) -> list:
        if self.manifest.params is None:
            return []
        with np.load(self.folder / self.manifest.params) as stored:  # one tensor in memory at a time
            return [self._tvm.runtime.tensor(stored[name], self._device) for name in sorted(stored.files)]

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        spec = self.manifest.input
        if tuple(x.shape) != spec.shape or x.dtype != np.float32:
            raise ValueError(f"input must be float32 {spec.shape}, got {x.dtype} {x.shape}")
        result = self._main(self._tvm.runtime.tensor(np.ascontiguousarray(x), self._device), *self._params)
        arrays = [result] if hasattr(result, "numpy") else list(result)
        if len(arrays) != len(self.manifest.outputs):
            raise ArtifactError(f"{self.folder} returned {len(arrays)} outputs, its manifest lists "
                                f"{len(self.manifest.outputs)}", "recompile the artifact")
        return {spec.name: a.numpy() for spec, a in zip(self.manifest.outputs, arrays)}
