"""The schedules compile gives kernels without tuning records (compile/leftovers.py, and the direct convolutions'
compile/direct.py) change how a kernel runs, never what it computes: every kernel of two real detectors (SSD: ReLU6
tails and heads ending in a slice; YOLOv3: leaky ReLU tails, ``max(x, 0.1 * x)``), float32 with and without the
direct convolutions and int8 with each int8 kernel of interest this CPU runs, scheduled and as imported, on the same
random inputs, give the same outputs."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = [pytest.mark.tvm, pytest.mark.mxnet, pytest.mark.slow]


@pytest.fixture(scope="module", params=["ssd_512_mobilenet1.0_voc", "yolo3_mobilenet1.0_coco"])
def detector_onnx(request, tmp_path_factory):
    """The detector at 128 px with random weights, as compile exports it. SSD-512's heads' output channels
    (anchors x classes) are no multiple of the int8 kernels' lanes, so their int8 kernels end in a slice; YOLOv3's
    convolutions end in a leaky ReLU, whose input is read twice."""
    from edgecv.compile.gluon import load_source_model
    from edgecv.compile.onnx_export import export_onnx
    from edgecv.compile.weights import Weights
    from edgecv.compile.zoo import resolve_model

    spec = resolve_model(request.param)
    model = load_source_model(spec, Weights(random_seed=0), 128, lambda m: None)
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(model, path)
    return path, model.input_shape, request.param


def _random_args(func, rng, weight_max: int = 127):
    """Random arguments for ``func``; int8 ones (the packed weights) within what the kernel takes (the AVX2
    kernels' int16 pair sums saturate beyond +-64: compile rounds the weights onto that range)."""
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    arrays = []
    for info in ArgInfo.from_prim_func(func):
        shape, dtype = [int(d) for d in info.shape], str(info.dtype)
        if dtype.startswith("float"):
            arrays.append(rng.standard_normal(shape).astype(dtype))
        else:
            info_ = np.iinfo(dtype)
            low, high = (-weight_max, weight_max) if dtype == "int8" else (max(info_.min, -1000), min(info_.max, 1000))
            arrays.append(rng.integers(low, high + 1, shape).astype(dtype))
    return arrays


def _out_channels(func) -> int:
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    return int(ArgInfo.from_prim_func(func)[-1].shape[-1])


def _kernels_to_check():
    """The int8 kernels to check on this CPU: the best one it runs (what ``--int8`` picks here) and the AVX2 one
    (what the x86 boxes run; every x86-64-v3 CPU runs it)."""
    from edgecv.compile import quantize as q
    from edgecv.compile.targets import resolve_target
    from edgecv.edge.cpu import host_cpu_flags

    flags = host_cpu_flags()
    return list(dict.fromkeys([q.int8_kernel(resolve_target("x86_64"), flags), q.INT8_KERNELS["avx2"]]))


@pytest.mark.parametrize("int8, direct", [(False, False), (False, True), (True, True)],
                         ids=["float32", "float32-direct", "int8-direct"])
def test_every_scheduled_kernel_computes_what_it_did_as_imported(detector_onnx, tmp_path, int8, direct):
    for kernel in _kernels_to_check() if int8 else [None]:
        _check_every_kernel(detector_onnx, tmp_path, kernel, direct)


def _check_every_kernel(detector_onnx, tmp_path, kernel, direct: bool):
    import tvm

    from edgecv.compile import quantize as q
    from edgecv.compile.build import apply_records, import_onnx
    from edgecv.compile.direct import kernels_for
    from edgecv.compile.leftovers import DIRECT, TENSORIZED, Kernels, schedule_leftovers
    from edgecv.compile.quantize import serial_tensorized
    from edgecv.compile.targets import resolve_target
    from edgecv.compile.tune import load_tensor_intrinsics

    onnx_path, shape, model = detector_onnx
    int8 = kernel is not None
    label = (kernel.name if int8 else "float32") + ("-direct" if direct else "")
    plan = None
    if int8:
        rng = np.random.default_rng(0)
        plan = q.Int8Plan(q.calibrate(onnx_path, "data", [rng.standard_normal(shape).astype(np.float32)
                                                          for _ in range(2)]), kernel)
    target = tvm.target.Target(resolve_target("x86_64").tvm_target())
    tiles = kernels_for(target) if direct else None
    mod, _ = import_onnx(onnx_path, "data", shape, plan, direct=tiles)
    load_tensor_intrinsics(target)
    records = tmp_path / label / "records"
    records.mkdir(parents=True)
    staged = apply_records(mod, target, records, False)
    imported = {gv.name_hint: f for gv, f in staged.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}
    scheduled = serial_tensorized(schedule_leftovers(staged, kernels=Kernels(kernel.intrin if int8 else None,
                                                                            tiles.lanes if direct else None)))
    rng = np.random.default_rng(1)
    checked = tensorized = direct_ones = 0
    for gv, func in scheduled.functions.items():
        if not isinstance(func, tvm.tirx.PrimFunc) or func.same_as(imported[gv.name_hint]):
            continue
        args = _random_args(func, rng, kernel.weight_max if int8 else 127)
        results = []
        for version in (imported[gv.name_hint], func):
            library = tvm.compile(tvm.IRModule({"main": version.with_attr("global_symbol", "main")}), target=target)
            tensors = [tvm.runtime.tensor(a.copy()) for a in args]
            library["main"](*tensors)
            results.append([t.numpy() for t in tensors])
        for before, after in zip(*results):
            scale = float(np.abs(before).max()) or 1.0
            np.testing.assert_allclose(after, before, rtol=0, atol=1e-5 * scale,
                                       err_msg=f"{gv.name_hint} ({label})")
        checked += 1
        tensorized += bool(func.attrs and TENSORIZED in func.attrs)
        direct_ones += bool(func.attrs and DIRECT in func.attrs)
    assert checked >= 20
    # with direct kernels every float32 convolution is one: all of the model's (YOLOv3's and SSD's depthwise and full
    # ones), or those int8 leaves (the first, 3 input channels, and the depthwise ones)
    assert direct_ones >= (3 if int8 else 20) if direct else direct_ones == 0, (label, direct_ones)
    if int8:  # SSD's heads (channels no multiple of the lanes: dropped by the untile), YOLOv3's leaky ReLU tails
        assert tensorized >= 10, kernel.name
        ours = [(gv.name_hint, func) for gv, func in scheduled.functions.items()
                if isinstance(func, tvm.tirx.PrimFunc) and func.attrs and TENSORIZED in func.attrs]
        if model.startswith("ssd"):
            assert any(_out_channels(func) % kernel.lanes for _, func in ours), label
        else:
            assert any("maximum" in name for name, _ in ours), label
