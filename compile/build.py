"""ONNX -> TVM Relax -> a shared library for the target CPU (cross-linked for ARM)."""
from __future__ import annotations

from pathlib import Path

from edgecv.compile.targets import TargetPreset


def build_library(onnx_path: Path, input_name: str, input_shape: tuple[int, ...], target: TargetPreset,
                  library: Path, params_file: Path, records: Path | None = None, log=lambda m: None) -> dict:
    """Compile and export; returns the TVM target dict used (recorded in the manifest).

    The weights go to ``params_file`` (an uncompressed .npz, in the order ``main`` takes them), not into
    the library: a library with embedded constants costs about three times their size in memory when
    loaded (the mapped file, the deserialised blob, the tensors); separate, they are read once.
    """
    import numpy as np

    import tvm

    fcompile = target.fcompile()  # fails early, before the slow part, if the cross g++ is missing
    mod, params = import_onnx(onnx_path, input_name, input_shape)
    np.savez(params_file, **{f"p{i:04d}": p.numpy() for i, p in enumerate(params)})
    spec = target.tvm_target()
    tvm_target = tvm.target.Target(spec)
    if records is not None:
        log(f"applying tuning records from {records}")
        executable = tvm.compile(mod, target=tvm_target, relax_pipeline=tuned_pipeline(tvm_target, records))
    else:
        executable = tvm.compile(mod, target=tvm_target)
    log(f"linking {library.name} for {target.arch}" + (f" with {target.cross_compiler}" if fcompile else ""))
    executable.export_library(str(library), fcompile=fcompile) if fcompile else executable.export_library(str(library))
    return spec


def import_onnx(onnx_path: Path, input_name: str, input_shape: tuple[int, ...]):
    """The Relax module ``build_library`` compiles (weights as parameters of ``main``) and those weights.

    ``edgecv tune`` extracts its tasks from this same module, so its records match what compile builds.
    """
    import onnx
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    mod = from_onnx(onnx.load(str(onnx_path)), shape_dict={input_name: list(input_shape)},
                    keep_params_in_input=True)
    mod, params = relax.frontend.detach_params(mod)
    return mod, list(params.get("main", []))


def tuned_pipeline(tvm_target, records: Path):
    """The Relax pipeline that applies a MetaSchedule database: the CPU backend's default pipeline with
    ``static_shape_tuning_pipeline(total_trials=0)`` (fuse, then apply the records) in place of its
    legalize-and-fuse step. That pipeline alone stops before lowering (VM codegen then fails on ``call_tir``).
    ``edgecv tune`` extracts its tasks after the same passes (``tune.extract_tasks``)."""
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu  # every edgecv target is an LLVM CPU

    # (relax.pipeline.dataflow_lower_passes fails in TVM 0.27: cpu_generic doesn't export it)
    return tvm.transform.Sequential([
        *cpu.library_dispatch_passes(tvm_target),
        relax.pipeline.static_shape_tuning_pipeline(total_trials=0, target=tvm_target, work_dir=str(records)),
        *cpu.dataflow_lower_passes(tvm_target),
        *cpu.finalize_passes(tvm_target),
    ])
