"""Run a compiled artifact with the TVM runtime alone (no compiler, no MXNet, not even the ``tvm`` package).

The artifact needs two libraries: ``tvm_ffi`` (the calling convention, tensors, module loading) and
``libtvm_runtime.so`` (the Relax VM): the apache-tvm-ffi wheel and, on a box, the edgecv-tvm-runtime wheel
(``edgecv/boxwheels.py``: the library alone, from the apache-tvm wheel), found at ``tvm/lib/`` in site-packages.
Loading them directly instead of ``import tvm`` keeps the edge process small: the ``tvm`` package imports hundreds
of Python modules of IR and target machinery that running an artifact never uses. In a process that already
imported the full TVM (the compile step's --verify) its libraries already provide the runtime and are used as
they are.
"""
from __future__ import annotations

import copy
import ctypes
import importlib.util
import os
import sys
import weakref
from pathlib import Path

import numpy as np

from edgecv.edge.artifact import Manifest, check_cpu_features, load_manifest
from edgecv.edge.errors import ArtifactError, reason

POOLED_ALLOCATOR = 2  # the Relax VM's allocator kinds: 1 naive, 2 pooled
SHARE_ALL_CORES = -3  # TVM's thread-pool mode that lets its threads run on any of the given CPUs (not pinned)
_runtime = None


def physical_cores() -> int:
    """The cores this process may run on, counting each physical core once (hyper-threads share one core's
    vector units). TVM's own default is half the logical CPUs on x86, on the guess that every core is
    hyper-threaded: on a box without hyper-threading that is half the cores, and half the speed."""
    cpus = os.sched_getaffinity(0)
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text(), (topology / "core_id").read_text()))
        except OSError:  # no sysfs topology (some containers): every CPU counts
            return len(cpus)
    return len(cores) or len(cpus)


def kernel_threads() -> int:
    """Threads for the compiled kernels in all: TVM_NUM_THREADS if the user set it, else the physical cores."""
    try:
        return max(1, int(os.environ["TVM_NUM_THREADS"]))
    except (KeyError, ValueError):
        return physical_cores()


class _Runtime:
    """The few runtime functions an artifact needs, looked up once."""

    def __init__(self):
        try:
            import tvm_ffi
        except ImportError as exc:
            raise ArtifactError(f"the TVM runtime is not installed ({exc})",
                                "pip install 'edgecv[edge]' (apache-tvm)") from None
        # Threads for the compiled kernels, read by TVM when its thread pool starts; TVM_NUM_THREADS set by the
        # user wins
        os.environ["TVM_NUM_THREADS"] = str(kernel_threads())
        if "tvm" not in sys.modules:  # the full TVM, when imported, already holds the runtime
            spec = importlib.util.find_spec("tvm")  # finds the package without importing it
            library = Path(spec.submodule_search_locations[0]) / "lib" / "libtvm_runtime.so" if spec else None
            if library is None or not library.is_file():
                raise ArtifactError("the TVM runtime library libtvm_runtime.so is missing",
                                    "pip install 'edgecv[edge]' (apache-tvm)")
            ctypes.CDLL(str(library), ctypes.RTLD_GLOBAL)
        self.ffi = tvm_ffi
        self.cpu = tvm_ffi.device("cpu", 0)
        self._alloc = tvm_ffi.get_global_func("runtime.TVMTensorAllocWithScope")
        self._from_bytes = tvm_ffi.get_global_func("runtime.TVMTensorCopyFromBytes")
        self._to_bytes = tvm_ffi.get_global_func("runtime.TVMTensorCopyToBytes")
        self.threads = tvm_ffi.get_global_func("runtime.NumThreads")
        self._config_threads = tvm_ffi.get_global_func("runtime.config_threadpool")

    def use_threads(self, count: int) -> None:
        """Run the kernels this thread calls on ``count`` threads, free to run on any core this process may use
        (TVM keeps one thread pool per calling thread: parallel streams each get their own)."""
        cpus = [str(cpu) for cpu in sorted(os.sched_getaffinity(0))]
        self._config_threads(SHARE_ALL_CORES, count, cpus)

    def empty(self, shape: tuple[int, ...], dtype: str):
        """A runtime tensor, aligned as compiled kernels expect; its values are undefined."""
        return self._alloc(self.ffi.Shape(shape), self.ffi.dtype(dtype), self.cpu, None)

    def tensor(self, array: np.ndarray):
        """A runtime tensor holding a copy of ``array``."""
        array = np.asarray(array, order="C")  # (not ascontiguousarray: it turns 0-d scalars into shape (1,))
        return self.copy_into(self.empty(array.shape, str(array.dtype)), array)

    def copy_into(self, tensor, array: np.ndarray):
        """``tensor`` (same shape and type) overwritten with ``array``'s values."""
        array = np.asarray(array, order="C")
        self._from_bytes(tensor, array.ctypes.data_as(ctypes.c_void_p), array.nbytes)
        return tensor

    def numpy(self, tensor) -> np.ndarray:
        out = np.empty(tuple(tensor.shape), np.dtype(str(tensor.dtype)))
        self._to_bytes(tensor, out.ctypes.data_as(ctypes.c_void_p), out.nbytes)
        return out

    @staticmethod
    def view(tensor) -> np.ndarray:
        """A writable numpy array over ``tensor``'s own memory; the array keeps the tensor alive."""
        return np.asarray(_TensorMemory(tensor))

    def load_vm(self, library: Path):
        """The Relax VM of a compiled library, initialised for the CPU."""
        executable = self.ffi.load_module(str(library))["vm_load_executable"]()
        executable["vm_initialization"](self.cpu.dlpack_device_type(), self.cpu.index, POOLED_ALLOCATOR)
        return executable


class _TensorMemory:
    """A runtime tensor's memory as numpy sees it (the array interface), holding the tensor."""

    def __init__(self, tensor):
        self.tensor = tensor
        self.__array_interface__ = {"data": (tensor.data_ptr(), False), "shape": tuple(tensor.shape),
                                    "typestr": np.dtype(str(tensor.dtype)).str, "version": 3}


def tvm_runtime() -> _Runtime:
    global _runtime
    if _runtime is None:
        _runtime = _Runtime()
    return _runtime


class TvmModel:
    """A checked, loaded artifact: ``__call__(x)`` returns its outputs as numpy arrays, by name. One caller at a
    time (as the Relax VM itself): the input tensor is reused from call to call."""

    def __init__(self, folder: Path, arch: str | None = None):
        self.folder = Path(folder)
        self.manifest: Manifest = load_manifest(self.folder, arch)
        check_cpu_features(self.manifest)
        self._rt = tvm_runtime()
        library = self.folder / self.manifest.library
        try:
            self._vm = self._rt.load_vm(library)
            self._main = self._vm["main"]
            self._params = self._load_params()
            self._input = None
            self._buffers = weakref.WeakValueDictionary()  # input_buffer()'s memory by address, while in use
        except Exception as exc:  # TVM raises its own error types for a library it can't load
            raise ArtifactError(f"TVM could not load {library} ({reason(exc)})",
                                "recompile the artifact for this machine") from None

    def replica(self) -> "TvmModel":
        """Another instance of this model, for a parallel stream: its own VM (activations, input tensor), the same
        loaded library and weights; it reads this one's input buffers in place too."""
        twin = copy.copy(self)
        twin._vm = self._rt.load_vm(self.folder / self.manifest.library)
        twin._main, twin._input = twin._vm["main"], None
        return twin

    def _load_params(self) -> list:
        if self.manifest.params is None:
            return []
        with np.load(self.folder / self.manifest.params) as stored:  # one tensor in memory at a time
            return [self._rt.tensor(stored[name]) for name in sorted(stored.files)]

    def input_buffer(self) -> np.ndarray:
        """An input array the model reads in place: preprocess a frame into it (in any thread) and pass it to
        ``__call__``, which then skips copying it into the model's own input tensor (1 MB a frame for a 300x300
        input)."""
        array = self._rt.view(self._rt.empty(self.manifest.input.shape, "float32"))
        self._buffers[array.ctypes.data] = array.base
        return array

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        spec = self.manifest.input
        if tuple(x.shape) != spec.shape or x.dtype != np.float32:
            raise ValueError(f"input must be float32 {spec.shape}, got {x.dtype} {x.shape}")
        memory = self._buffers.get(x.ctypes.data) if x.flags.c_contiguous else None
        if memory is None:  # any other array is copied into one input tensor kept for the model's life (a
            if self._input is None:  # fresh 1 MB+ tensor per frame costs its page faults every time)
                self._input = self._rt.tensor(x)
            else:
                self._rt.copy_into(self._input, x)
        result = self._main(self._input if memory is None else memory.tensor, *self._params)
        arrays = [result] if isinstance(result, self._rt.ffi.Tensor) else list(result)
        if len(arrays) != len(self.manifest.outputs):
            raise ArtifactError(f"{self.folder} returned {len(arrays)} outputs, its manifest lists "
                                f"{len(self.manifest.outputs)}", "recompile the artifact")
        return {spec.name: self._rt.numpy(a) for spec, a in zip(self.manifest.outputs, arrays)}
