"""ONNX -> TVM Relax -> a shared library for the target CPU (cross-linked for ARM)."""
from __future__ import annotations

import tempfile
from pathlib import Path

from edgecv.compile.leftovers import Kernels
from edgecv.compile.targets import TargetPreset


def build_library(onnx_path: Path, input_name: str, input_shape: tuple[int, ...], target: TargetPreset,
                  library: Path, params_file: Path, records: Path | None = None, log=lambda m: None,
                  int8=None, direct: bool = True) -> dict:
    """Compile and export; returns the TVM target dict used (recorded in the manifest).

    The weights go to ``params_file`` (an uncompressed .npz, in the order ``main`` takes them), not into
    the library: a library with embedded constants costs about three times their size in memory when
    loaded (the mapped file, the deserialised blob, the tensors); separate, they are read once.
    With ``int8`` (a ``quantize.Int8Plan``: calibrated ranges and the CPU's kernel) the full convolutions run in
    int8 (``quantize``). With ``direct`` the float32 convolutions (all of them, or those int8 leaves) run as
    edgecv's register-tiled kernels (``direct``) instead of the schedules the records give them.
    With records tuned for pre-packed weights (``records_prepacked``), the weights are stored already in the
    layouts the tuned kernels chose: the layout transforms run here, once, not on the device.
    """
    import numpy as np

    import tvm

    from edgecv.compile.direct import kernels_for

    fcompile = target.fcompile()  # fails early, before the slow part, if the cross g++ is missing
    spec = target.tvm_target()
    tvm_target = tvm.target.Target(spec)
    tiles = kernels_for(tvm_target)
    mod, params = import_onnx(onnx_path, input_name, input_shape, int8, log, tiles, direct)
    kernels = Kernels(int8.kernel.intrin if int8 is not None else None, tiles.lanes)
    if records is not None:
        prepack = records_prepacked(records)
        log(f"applying tuning records from {records}" + (" (weights pre-packed)" if prepack else ""))
        with tempfile.TemporaryDirectory(prefix="edgecv-records-") as scratch:
            if int8 is not None and int8.kernel.transfers:  # another kernel's records, with this one's dot product
                from edgecv.compile.quantize import transfer_records

                records = transfer_records(records, int8.kernel, Path(scratch))
            executable, params = _compile_tuned(mod, params, tvm_target, records, prepack, log, kernels)
    elif int8 is not None or direct:  # no records: the int8 and direct kernels still get theirs
        with tempfile.TemporaryDirectory(prefix="edgecv-no-records-") as empty:
            executable, params = _compile_tuned(mod, params, tvm_target, Path(empty), False, log, kernels)
    else:
        executable = tvm.compile(mod, target=tvm_target)
    np.savez(params_file, **{f"p{i:04d}": p.numpy() for i, p in enumerate(params)})
    log(f"linking {library.name} for {target.arch}" + (f" with {target.cross_compiler}" if fcompile else ""))
    executable.export_library(str(library), fcompile=fcompile) if fcompile else executable.export_library(str(library))
    return spec


def _compile_tuned(mod, params: list, tvm_target, records: Path, prepack: bool, log=lambda m: None,
                   kernels: Kernels = Kernels()):
    """The executable with the records applied, and the weights it takes (re-laid out when pre-packed).

    Kernels the records don't cover get a basic schedule (``leftovers``), int8 convolutions one tensorized with
    ``kernels.int8_intrin``, direct ones theirs. Pre-packing lifts the weight layout
    transforms into ``main_transform_params``: that function is built for
    this machine's generic CPU and run here on the weights, and left out of the library the device loads.
    """
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    from edgecv.compile.leftovers import schedule_leftovers
    from edgecv.compile.quantize import serial_tensorized
    from edgecv.compile.tune import load_tensor_intrinsics

    load_tensor_intrinsics(tvm_target)  # the records' traces tensorize with them

    staged = serial_tensorized(schedule_leftovers(apply_records(mod, tvm_target, records, prepack), log, kernels))
    if prepack:
        host = tvm.target.Target({"kind": "llvm"})
        transform = relax.transform.DeadCodeElimination(["main_transform_params"])(_only(staged, "main_transform_params"))
        vm = relax.VirtualMachine(tvm.compile(transform, target=host), tvm.cpu())
        params = list(vm["main_transform_params"](params))
        staged = relax.transform.DeadCodeElimination(["main"])(_only(staged, "main"))
    # (relax.pipeline.dataflow_lower_passes fails in TVM 0.27: cpu_generic doesn't export it)
    lower = tvm.transform.Sequential([*cpu.dataflow_lower_passes(tvm_target), *cpu.finalize_passes(tvm_target)])
    return tvm.compile(staged, target=tvm_target, relax_pipeline=lower), params


def _only(mod, name: str):
    """``mod`` without the Relax functions other than ``name`` (their PrimFuncs go with dead-code elimination)."""
    import tvm
    from tvm import relax

    return tvm.IRModule({gv: f for gv, f in mod.functions.items()
                         if not isinstance(f, relax.Function) or gv.name_hint == name}, attrs=mod.attrs)


def records_prepacked(records: Path) -> bool:
    """Whether a records folder was tuned with the weights' layouts free (``edgecv tune`` writes such folders
    for targets it compiles on the machine itself); older folders were not, and are applied as they were."""
    import base64
    import json

    from edgecv.compile.pipeline import RECORDS_DB

    workloads = Path(records) / RECORDS_DB[0]
    lines = workloads.read_text().splitlines() if workloads.is_file() else []
    # each line: [structural hash, base64 of the serialised PrimFunc]; a tuned-for-prepacking one carries the
    # attribute marking its weights' layouts free
    return any(b"layout_free_buffers" in base64.b64decode(json.loads(line)[1]) for line in lines if line.strip())


def import_onnx(onnx_path: Path, input_name: str, input_shape: tuple[int, ...], int8=None, log=lambda m: None,
                tiles=None, direct: bool = False):
    """The Relax module ``build_library`` compiles (weights as parameters of ``main``) and those weights; with an
    ``int8`` plan (``quantize.Int8Plan``), its full convolutions quantized (``quantize.quantize_module``); with
    ``direct``, its float32 convolutions as direct kernels (``direct.direct_module``). ``tiles``
    (``direct.DirectKernels``: compile and tune pass the target's; by default ones any CPU's registers hold) shapes
    the direct kernels, which int8's depthwise ones are too.

    ``edgecv tune`` extracts its tasks from this same module, so its records match what compile builds.
    """
    import onnx
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    mod = from_onnx(clip_bounds_as_constants(onnx.load(str(onnx_path))), shape_dict={input_name: list(input_shape)},
                    keep_params_in_input=True)
    mod, params = relax.frontend.detach_params(mod)
    params = list(params.get("main", []))
    if int8 is None and not direct:
        return mod, params
    from edgecv.compile.direct import DirectKernels
    from edgecv.compile.rewrite import channels_last, lift_constants

    tiles = tiles or DirectKernels(lanes=4, registers=16)
    mod, num_input = channels_last(mod, params)
    if int8 is not None:
        from edgecv.compile.quantize import quantize_module

        mod = quantize_module(mod, int8, tiles, log, direct)
    if direct:
        from edgecv.compile.direct import direct_module

        mod = direct_module(mod, tiles, log)
    return lift_constants(mod, num_input)


def clip_bounds_as_constants(model):
    """Clip's min/max (ReLU6: 0 and 6) as constants instead of weights. Imported as weights they reach each
    kernel as run-time scalars behind isnan/where guards (9 fused blocks per convolution, on which
    MetaSchedule's search fails); as constants they fold into a plain clamp."""
    from onnx import helper

    graph = model.graph
    bounds = {name for node in graph.node if node.op_type == "Clip" for name in node.input[1:] if name}
    scalars = [init for init in graph.initializer if init.name in bounds and len(init.dims) == 0]
    for position, init in enumerate(scalars):
        graph.initializer.remove(init)
        graph.node.insert(position, helper.make_node("Constant", [], [init.name], value=init))
    return model


def apply_records(mod, tvm_target, records: Path, prepack: bool):
    """``mod`` fused, with the records' schedules applied (and the weight layout transforms lifted into
    ``main_transform_params`` when ``prepack``), not yet lowered: the CPU backend's library dispatch, then
    ``static_shape_tuning_pipeline(total_trials=0)`` in place of the default legalize-and-fuse step. ``edgecv
    tune`` extracts its tasks after the same passes (``tune.extract_tasks``), so every record is found."""
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu  # every edgecv target is an LLVM CPU

    with tvm_target:
        return tvm.transform.Sequential([
            *cpu.library_dispatch_passes(tvm_target),
            relax.pipeline.static_shape_tuning_pipeline(total_trials=0, target=tvm_target, work_dir=str(records),
                                                        cpu_weight_prepack=prepack)])(mod)
