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

    import onnx
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    fcompile = target.fcompile()  # fails early, before the slow part, if the cross g++ is missing
    mod = from_onnx(onnx.load(str(onnx_path)), shape_dict={input_name: list(input_shape)},
                    keep_params_in_input=True)
    mod, params = relax.frontend.detach_params(mod)
    np.savez(params_file, **{f"p{i:04d}": p.numpy() for i, p in enumerate(params.get("main", []))})
    spec = target.tvm_target()
    tvm_target = tvm.target.Target(spec)
    if records is not None:
        log(f"applying tuning records from {records}")
        pipeline = relax.pipeline.static_shape_tuning_pipeline(total_trials=0, target=tvm_target,
                                                               work_dir=str(records))
        executable = tvm.compile(mod, target=tvm_target, relax_pipeline=pipeline)
    else:
        executable = tvm.compile(mod, target=tvm_target)
    log(f"linking {library.name} for {target.arch}" + (f" with {target.cross_compiler}" if fcompile else ""))
    executable.export_library(str(library), fcompile=fcompile) if fcompile else executable.export_library(str(library))
    return spec
