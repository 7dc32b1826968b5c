"""int8 convolutions (compile/quantize.py): weight packing, ranges, the rewritten graph against ONNX Runtime for every
kernel's arithmetic, each tensorized kernel this CPU runs built and exact, and the kernel each target gets."""
from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import EVEX_TWINS
from edgecv.compile import quantize as q
from edgecv.compile.targets import TARGETS, resolve_target
from edgecv.edge.cpu import host_cpu_flags
from edgecv.edge.errors import EdgecvError, TargetError

# The x86 kernels this CPU runs (each tested where it runs: every x86-64-v3 CPU runs avx2); None if it runs none,
# which fails the tests that take it rather than leaving them unrun.
RUNNABLE = q.host_kernels(host_cpu_flags()) or [None]
# Where this CPU lacks AVX-VNNI but runs its EVEX twin (conftest.EVEX_TWINS), the avx-vnni kernel is built and
# checked too: its arithmetic run in that encoding, its own target's code (VEX, with LLVM picking no 512-bit
# register) only built and read.
BUILT = RUNNABLE + [q.INT8_KERNELS[name] for name, (needs, _) in EVEX_TWINS.items()
                    if q.INT8_KERNELS[name] not in RUNNABLE and needs <= host_cpu_flags()]


def _runnable(kernel):
    assert kernel is not None, "this CPU runs no int8 kernel: edgecv needs x86-64 with AVX2 and FMA at least"
    return kernel


MNEMONIC = {"avx512-vnni": "vpdpbusd", "avx-vnni": "vpdpbusd", "avx512bw": "vpmaddubsw", "avx2": "vpmaddubsw"}


def _target(kernel) -> dict:
    """The kernel's own target, or where this CPU lacks its features, its EVEX twin's."""
    spec = resolve_target(kernel.preset).tvm_target()
    if kernel not in RUNNABLE:
        spec["mattr"] = EVEX_TWINS[kernel.name][1]
    return spec


@pytest.mark.parametrize("kernel", q.INT8_KERNELS.values(), ids=q.INT8_KERNELS)
def test_weights_pack_into_lane_blocks_and_dequantize_within_half_a_step(kernel):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(20, 3, 3, 8)).astype(np.float32)  # OHWI, 20 output channels: padded to the lanes
    w[3] = 0  # an all-zero channel keeps a usable scale
    lanes, kp = kernel.lanes, -(-20 // kernel.lanes) * kernel.lanes
    packed, scales, sums = q.pack_weights(w, lanes, kernel.weight_max)
    assert packed.shape == (kp // lanes, 3, 3, 2, lanes, 4) and packed.dtype == np.int8
    unpacked = packed.transpose(0, 4, 1, 2, 3, 5).reshape(kp, 3, 3, 8)  # back to OHWI
    assert not unpacked[20:].any() and not scales[20:].any()
    assert np.abs(unpacked).max() == kernel.weight_max
    assert np.all(np.abs(unpacked[:20] * scales[:20, None, None, None] - w) <= scales[:20, None, None, None] / 2 + 1e-7)
    assert np.array_equal(sums, unpacked.reshape(kp, -1).sum(axis=1))
    assert scales[3] == 1.0 and not unpacked[3].any()


@pytest.mark.parametrize("low, high, zero", [(0.0, 6.0, 0), (-1.0, 3.0, 64), (2.0, 4.0, 0), (-2.0, -1.0, 255)])
def test_activation_range_maps_onto_bytes_and_keeps_zero_exact(low, high, zero):
    scale, z = q.Range(low, high).affine()
    assert z == zero
    # the bytes cover the range (widened to contain 0) to within half a step at each end
    assert (255 - z) * scale >= max(high, 0) - scale / 2 and (0 - z) * scale <= min(low, 0) + scale / 2
    assert (255 - z) * scale - (0 - z) * scale == pytest.approx(max(high, 0) - min(low, 0))
    assert q.Range(0.0, 0.0).affine() == (1.0, 0)


def _two_convs(path):
    """Conv 3x3 stride 2 (8 -> 20 channels) + ReLU + Conv 1x1 (20 -> 16): both quantizable."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(scale=0.3, size=(20, 8, 3, 3)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.normal(size=20).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.normal(scale=0.3, size=(16, 20, 1, 1)).astype(np.float32), "w2")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["data", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
         helper.make_node("Relu", ["c1"], ["r1"]),
         helper.make_node("Conv", ["r1", "w2"], ["out"])],
        "two", [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 8, 16, 16])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 16, 8, 8])], [w1, b1, w2])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))


@pytest.mark.parametrize("kernel", q.INT8_KERNELS.values(), ids=q.INT8_KERNELS)
def test_int8_graph_matches_onnx_runtime_within_quantization_error(tmp_path, kernel):
    """Every kernel's arithmetic (byte type, zero point, packing, weight range), run here untensorized: the same
    graph each CPU family tensorizes."""
    import onnxruntime as ort
    import tvm
    from tvm import relax

    from edgecv.compile.build import import_onnx

    _two_convs(tmp_path / "m.onnx")
    rng = np.random.default_rng(1)
    calibration = [rng.normal(size=(1, 8, 16, 16)).astype(np.float32) for _ in range(4)]
    ranges = q.calibrate(tmp_path / "m.onnx", "data", calibration)
    assert len(ranges) == 2
    mod, params = import_onnx(tmp_path / "m.onnx", "data", (1, 8, 16, 16), q.Int8Plan(ranges, kernel))
    assert mod["main"].script().count(f'dtype="{kernel.activations}") = R.astype(') == 2  # both inputs in bytes
    assert mod["main"].script().count("conv2d_int8") == 2
    assert {p.dtype for p in map(np.asarray, (t.numpy() for t in params))} >= {np.dtype(np.int8)}
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = rng.normal(size=(1, 8, 16, 16)).astype(np.float32)
    want = session.run(None, {"data": x})[0]
    got = vm["main"](tvm.runtime.tensor(x), *params).numpy()
    assert got.shape == want.shape
    error = np.abs(got - want).max() / np.abs(want).max()
    assert error < 0.03, error  # 8-bit steps, two layers deep
    assert error > 0  # it did run in int8


def test_without_ranges_nothing_is_quantized(tmp_path):
    from edgecv.compile.build import import_onnx

    _two_convs(tmp_path / "m.onnx")
    mod, _ = import_onnx(tmp_path / "m.onnx", "data", (1, 8, 16, 16), q.Int8Plan({}, q.INT8_KERNELS["avx2"]))
    assert "conv2d_int8" not in mod["main"].script()


@pytest.mark.slow
@pytest.mark.parametrize("kernel", BUILT, ids=[k.name if k else "none" for k in BUILT])
def test_int8_kernel_tensorizes_with_its_dot_product_and_is_exact(tmp_path, kernel):
    """MetaSchedule, given the kernel's rules, tensorizes the int8 convolution with the kernel's dot product; the
    schedule builds (with the intrinsic and vectorize fixes) for the kernel's own target and computes exactly what
    integer arithmetic says, also at the extremes (bytes of 255 against weights of +-weight_max: AVX2's int16 pair
    sums stay below saturation)."""
    import tvm
    from tvm import te
    from tvm.s_tir import meta_schedule as ms

    from edgecv.compile.tune import build_candidate, load_tensor_intrinsics

    kernel = _runnable(kernel)
    # tune_tir names MetaSchedule's logger's handlers in a logging config; one it finds unnamed (pytest's, after an
    # earlier tune_tir in this process) breaks that: start each search with the logger as TVM first sets it up
    logging.getLogger("tvm.s_tir.meta_schedule").handlers.clear()
    lanes, top = kernel.lanes, kernel.weight_max
    x = te.placeholder((1, 8, 8, 64), kernel.activations, name="x")
    w = te.placeholder((32 // lanes, 3, 3, 16, lanes, 4), "int8", name="w")
    zero = te.placeholder((1,), kernel.activations, name="zero")
    out = q.conv2d_int8_nhwc(x, w, zero, (1, 1), (1, 1, 1, 1))
    mod = tvm.IRModule({"main": te.create_prim_func([x, w, zero, out]).with_attr("global_symbol", "main")})
    target = tvm.target.Target(_target(kernel))
    load_tensor_intrinsics(target)
    db = ms.tune_tir(mod, target, str(tmp_path), max_trials_global=16, num_trials_per_iter=16,
                     space=q.int8_space(kernel), builder=ms.builder.LocalBuilder(f_build=build_candidate))
    sch = ms.tir_integration.compile_tir(db, mod, target)
    assert sch is not None, "no candidate built"
    assert kernel.intrin in str(sch.trace)
    lib = build_candidate(sch.mod, target, None)
    assert kernel.instruction in sch.mod.script()
    own = lib if kernel in RUNNABLE else build_candidate(sch.mod, resolve_target(kernel.preset).tvm_target(), None)
    asm = own.inspect_source("asm")
    assert MNEMONIC[kernel.name] in asm
    if "avx512f" not in kernel.needs:  # no AVX-512 register anywhere: it runs on an AVX2-only CPU
        assert "zmm" not in asm
    rng = np.random.default_rng(0)
    low = -128 if kernel.activations == "int8" else 0
    xs = rng.integers(low, low + 256, size=(1, 8, 8, 64)).astype(kernel.activations)
    ws = rng.integers(-top, top + 1, size=(32 // lanes, 3, 3, 16, lanes, 4)).astype(np.int8)
    xs[0, :4] = low + 255  # the largest bytes against the largest weights of both signs
    ws[0, :, :, :8] = top
    ws[0, :, :, 8:] = -top
    result = tvm.runtime.tensor(np.zeros((1, 8, 8, 32), np.int32))
    point = np.array([low + 7], kernel.activations)
    lib["main"](tvm.runtime.tensor(xs), tvm.runtime.tensor(ws), tvm.runtime.tensor(point), result)
    w_ohwi = ws.transpose(0, 4, 1, 2, 3, 5).reshape(32, 3, 3, 64).astype(np.int64)
    padded = np.pad(xs.astype(np.int64), ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=low + 7)
    want = sum(np.einsum("nhwc,kc->nhwk", padded[:, r:r + 8, s:s + 8], w_ohwi[:, r, s]) for r in range(3)
               for s in range(3))
    assert np.array_equal(result.numpy(), want)


@pytest.mark.parametrize("h, w, c, k, r, stride", [
    (7, 19, 32, 40, 3, 1),   # 19 pixels a row: the last tile runs past the edge; 40 channels: the untile drops 8
    (9, 11, 64, 96, 3, 2),   # strided
    (5, 13, 16, 16, 1, 1),   # 1x1, one block
    (8, 8, 512, 48, 3, 1),   # 216 KB of weights, few blocks: every row per block, the rows in parts
    (7, 7, 512, 48, 3, 1),   # the same on 7 rows: no parts (the tensorized kernel takes no condition on its rows)
])
@pytest.mark.parametrize("kernel", BUILT, ids=[k.name if k else "none" for k in BUILT])
def test_direct_int8_kernel_is_exact_past_the_row_edge_and_the_padded_channels(kernel, h, w, c, k, r, stride):
    """The direct int8 kernel (``--conv-kernels direct``: tiles of pixels by blocks of dot products, the fixed
    schedule of ``leftovers.int8_schedule``) computes exactly what integer arithmetic says, the zero point in the
    padding, with the kernel's own dot product, for rows no multiple of the tile and channels no multiple of the
    block."""
    import tvm
    from tvm import te

    from edgecv.compile.direct import kernels_for
    from edgecv.compile.leftovers import DIRECT, TENSORIZED, int8_schedule
    from edgecv.compile.tune import load_tensor_intrinsics

    kernel = _runnable(kernel)
    target = tvm.target.Target(_target(kernel))
    load_tensor_intrinsics(target)
    pad = r // 2
    ow = (w + 2 * pad - r) // stride + 1
    block, run = kernels_for(target).int8(kernel.lanes).conv_tile(k, ow)
    rng = np.random.default_rng(k)
    low = -128 if kernel.activations == "int8" else 0
    xs = rng.integers(low, low + 256, size=(1, h, w, c)).astype(kernel.activations)
    w_ohwi = rng.integers(-kernel.weight_max, kernel.weight_max + 1, size=(k, r, r, c)).astype(np.float32)
    w_ohwi[:, 0, 0, 0] = kernel.weight_max  # each channel's scale 1: packed as they are
    packed, _, _ = q.pack_weights(w_ohwi, kernel.lanes, kernel.weight_max, block)
    x = te.placeholder(xs.shape, kernel.activations, name="x")
    wt = te.placeholder(packed.shape, "int8", name="w")
    zero = te.placeholder((1,), kernel.activations, name="zero")
    out = q.conv2d_int8_nhwc(x, wt, zero, (stride, stride), (pad,) * 4, tile=(block, run), out_channels=k)
    func = int8_schedule(te.create_prim_func([x, wt, zero, out]), kernel.intrin)
    assert func is not None and TENSORIZED in func.attrs and DIRECT in func.attrs
    mod = q.serial_tensorized(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}))
    assert kernel.instruction in mod.script()
    lib = tvm.compile(mod, target=target)
    oh = (h + 2 * pad - r) // stride + 1
    result = tvm.runtime.tensor(np.zeros((1, oh, ow, k), np.int32))
    point = np.array([low + 7], kernel.activations)
    lib["main"](tvm.runtime.tensor(xs), tvm.runtime.tensor(packed), tvm.runtime.tensor(point), result)
    padded = np.pad(xs.astype(np.int64), ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=low + 7)
    want = sum(np.einsum("nhwc,kc->nhwk", padded[:, i:i + stride * oh:stride, j:j + stride * ow:stride],
                         w_ohwi[:, i, j].astype(np.int64)) for i in range(r) for j in range(r))
    assert np.array_equal(result.numpy(), want)


@pytest.mark.parametrize("kernel", BUILT, ids=[k.name if k else "none" for k in BUILT])
def test_int8_kernels_without_records_still_use_the_dot_product(tmp_path, kernel):
    """A model no one tuned (every int8 model on an ARM board) gets a fixed schedule around the kernel's dot product
    for its int8 convolutions (leftovers.int8_schedule), computing what the plain basic schedule computes."""
    import onnxruntime as ort
    import tvm
    from tvm import relax

    from edgecv.compile.build import _compile_tuned, import_onnx
    from edgecv.compile.leftovers import Kernels

    kernel = _runnable(kernel)
    _conv_depthwise_conv(tmp_path / "m.onnx", size=64)
    (tmp_path / "records").mkdir()
    rng = np.random.default_rng(1)
    ranges = q.calibrate(tmp_path / "m.onnx", "data", [rng.normal(size=(1, 8, 64, 64)).astype(np.float32)
                                                       for _ in range(4)])
    x = rng.normal(size=(1, 8, 64, 64)).astype(np.float32)
    want = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"data": x})[0]
    target = tvm.target.Target(_target(kernel))
    results = {}
    for intrin in (kernel.intrin, None):
        logged = []
        mod, params = import_onnx(tmp_path / "m.onnx", "data", (1, 8, 64, 64), q.Int8Plan(ranges, kernel))
        executable, params = _compile_tuned(mod, params, target, tmp_path / "records", False, logged.append,
                                            Kernels(int8_intrin=intrin))
        results[intrin] = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x), *params).numpy()
        assert (f"2 int8 ones with {kernel.intrin}" in " ".join(logged)) == (intrin is not None), logged
    np.testing.assert_allclose(results[kernel.intrin], results[None], rtol=1e-5, atol=1e-5 * np.abs(want).max())
    assert np.abs(results[kernel.intrin] - want).max() / np.abs(want).max() < 0.03


def test_large_depthwise_inputs_are_the_ones_read_as_uint8():
    """The size rule on the OID detector's (MobileNetV2, 300x300) depthwise inputs: the four of 2.9-8.6 MB go
    uint8, the 1.1 MB ones and smaller stay float32."""
    for shape in [(1, 150, 150, 32), (1, 150, 150, 96), (1, 75, 75, 144)]:
        assert q.depthwise_uint8(shape)
    for shape in [(1, 38, 38, 192), (1, 19, 19, 576), (1, 10, 10, 960)]:
        assert not q.depthwise_uint8(shape)
    assert not q.depthwise_uint8((1, 150, 150, 96), "uint8")
    assert q.depthwise((32, 1, 3, 3), 32) and not q.depthwise((64, 1, 3, 3), 32) and not q.depthwise((32, 4, 3, 3), 1)


def _conv_depthwise_conv(path, size=32):
    """Conv 1x1 (8 -> 32) + ReLU6 + depthwise 3x3 stride 2 + ReLU6 + Conv 1x1 (32 -> 16): MobileNetV2's block."""
    rng = np.random.default_rng(0)
    init = [numpy_helper.from_array(rng.normal(scale=0.4, size=(32, 8, 1, 1)).astype(np.float32), "w1"),
            numpy_helper.from_array(rng.normal(size=32).astype(np.float32), "b1"),
            numpy_helper.from_array(rng.normal(scale=0.4, size=(32, 1, 3, 3)).astype(np.float32), "wd"),
            numpy_helper.from_array(rng.normal(size=32).astype(np.float32), "bd"),
            numpy_helper.from_array(rng.normal(scale=0.3, size=(16, 32, 1, 1)).astype(np.float32), "w2"),
            numpy_helper.from_array(np.array(0, np.float32), "lo"),
            numpy_helper.from_array(np.array(6, np.float32), "hi")]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["data", "w1", "b1"], ["c1"]),
         helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"]),
         helper.make_node("Conv", ["r1", "wd", "bd"], ["cd"], group=32, pads=[1, 1, 1, 1], strides=[2, 2]),
         helper.make_node("Clip", ["cd", "lo", "hi"], ["rd"]),
         helper.make_node("Conv", ["rd", "w2"], ["out"])],
        "block", [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 8, size, size])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 16, size // 2, size // 2])], init)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))


def _storage_sizes(executable) -> list[int]:
    """The Relax VM's static memory plan: the sizes of its ``vm.builtin.alloc_storage`` calls (constants)."""
    import re

    pool = executable.stats().split("Constant pool (#", 1)[1].split(": [", 1)[1]
    # items: shapetuple[...], a quoted string (which may hold quotes, never one before a comma or bracket), a word
    constants = re.findall(r'shapetuple\[[^\]]*\]|"(?:[^"]|"(?![,\]]))*"|[^,\s\["\]]+', pool.split("\n", 1)[0])
    sizes = []
    for index in re.findall(r"vm\.builtin\.alloc_storage in: %vm, c\[(\d+)\]", executable.as_text()):
        sizes.append(int(re.fullmatch(r"shapetuple\[(\d+)\]", constants[int(index)]).group(1)))
    return sizes


def test_large_depthwise_reads_uint8_close_to_float_and_its_float_input_is_gone(tmp_path, monkeypatch):
    """A depthwise convolution past the size rule reads its input as bytes: the quantization fuses into the
    previous kernel (the memory plan holds no float32 copy of that input), and the result stays within 8-bit
    error of ONNX Runtime's float32, near what the same graph gives with that depthwise in float32."""
    import onnxruntime as ort
    import tvm
    from tvm import relax

    from edgecv.compile.build import _compile_tuned, import_onnx

    _conv_depthwise_conv(tmp_path / "m.onnx")
    (tmp_path / "records").mkdir()  # none: compile's own path (fused as with records, basic schedules)
    rng = np.random.default_rng(1)
    calibration = [rng.normal(size=(1, 8, 32, 32)).astype(np.float32) for _ in range(4)]
    ranges = q.calibrate(tmp_path / "m.onnx", "data", calibration)
    assert len(ranges) == 3  # both full convolutions' inputs and the depthwise one's
    float_input = 4 * 32 * 32 * 32  # the depthwise convolution's input in float32, bytes
    x = rng.normal(size=(1, 8, 32, 32)).astype(np.float32)
    want = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"data": x})[0]
    results = {}
    for name, least in (("float", float_input + 1), ("uint8", float_input)):
        monkeypatch.setattr(q, "DEPTHWISE_UINT8_MIN_BYTES", least)
        mod, params = import_onnx(tmp_path / "m.onnx", "data", (1, 8, 32, 32),
                                  q.Int8Plan(ranges, q.INT8_KERNELS["avx2"]))
        assert mod["main"].script().count("direct_depthwise") == (name == "uint8")  # its kernel reads the bytes
        executable, params = _compile_tuned(mod, params, tvm.target.Target({"kind": "llvm"}), tmp_path / "records",
                                            False)
        got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x), *params).numpy()
        results[name] = got, _storage_sizes(executable)
    (floats, float_plan), (bytes_, byte_plan) = results["float"], results["uint8"]
    assert max(float_plan) >= float_input > max(byte_plan), (float_plan, byte_plan)
    assert sum(byte_plan) < sum(float_plan)
    scale = np.abs(want).max()
    assert np.abs(floats - want).max() / scale < 0.03
    error = np.abs(bytes_ - want).max() / scale
    assert error < 0.03, error  # 8-bit steps, three layers deep
    assert 0 < np.abs(bytes_ - floats).max() / scale < 0.02  # it did read bytes, and only that input's rounding


def test_depthwise_kernel_is_the_float_depthwise_of_the_dequantized_bytes():
    """The direct depthwise kernel reading bytes, stride 1 and 2, asymmetric padding: sum((x - zero) * w) of the
    bytes, the padding contributing nothing, is the float depthwise convolution of (x - zero) padded with zeros
    (float32 rounding only)."""
    import tvm
    from tvm import te

    from edgecv.compile.direct import depthwise_direct, pack_depthwise_weights

    rng = np.random.default_rng(2)
    for strides, padding in (((1, 1), (1, 1, 1, 1)), ((2, 2), (0, 0, 1, 1))):
        x = te.placeholder((1, 9, 10, 24), "uint8", name="x")
        w = te.placeholder((3, 3, 3, 8), "float32", name="w")
        out = depthwise_direct(x, w, strides, padding, run=2, offset=37.0)
        lib = tvm.compile(tvm.IRModule({"main": te.create_prim_func([x, w, out])}), target="llvm")
        xs = rng.integers(0, 256, size=(1, 9, 10, 24), dtype=np.uint8)
        ws = rng.normal(scale=0.01, size=(3, 3, 24)).astype(np.float32)
        result = tvm.runtime.tensor(np.zeros([int(d) for d in out.shape], np.float32))
        packed = pack_depthwise_weights(ws.transpose(2, 0, 1)[..., None], 8)
        lib["main"](tvm.runtime.tensor(xs), tvm.runtime.tensor(packed), result)
        top, left, bottom, right = padding
        padded = np.pad(xs.astype(np.float64) - 37, ((0, 0), (top, bottom), (left, right), (0, 0)))
        oh, ow = result.shape[1:3]
        want = sum(padded[:, r:r + strides[0] * oh:strides[0], s:s + strides[1] * ow:strides[1]] * ws[r, s]
                   for r in range(3) for s in range(3))
        got = result.numpy()
        assert got.shape == want.shape
        assert np.allclose(got, want, rtol=0, atol=1e-4), np.abs(got - want).max()


AVX2, AVX512BW = frozenset({"avx2", "fma"}), frozenset({"avx2", "fma", "avx512f", "avx512bw", "avx512vl"})
VNNI = AVX512BW | {"avx512_vnni"}


@pytest.mark.parametrize("target, flags, kernel", [
    ("x86_64", VNNI, "avx512-vnni"), ("x86_64", AVX512BW, "avx512bw"), ("x86_64", AVX2, "avx2"),
    ("x86_64", AVX2 | {"avx_vnni"}, "avx-vnni"), ("x86_64", VNNI | {"avx_vnni"}, "avx512-vnni"),
    ("x86-64-v3-vnni", frozenset(), "avx-vnni"),
    ("cascadelake", frozenset(), "avx512-vnni"),  # a named board: its own CPU, not this one
    ("skylake-avx512", VNNI, "avx512bw"), ("x86-64-v3", VNNI, "avx2"),
    ("aarch64", VNNI, "neon"), ("rasp4b64", frozenset(), "neon"), ("rk3399", frozenset(), "neon"),
    ("cortex-a76", frozenset(), "neon-dotprod")])
def test_each_target_gets_its_int8_kernel(target, flags, kernel):
    assert q.int8_kernel(resolve_target(target), flags).name == kernel


def test_int8_without_a_kernel_is_one_line_naming_the_target_and_the_fix():
    with pytest.raises(TargetError, match=r"no kernel for target armv7 \(armv7l\).*compile without --int8"):
        q.int8_kernel(resolve_target("armv7"), frozenset())
    with pytest.raises(TargetError, match="at least AVX2 and FMA.*x86-64-v3"):
        q.int8_kernel(resolve_target("x86_64"), frozenset({"sse4_2", "avx"}))


def test_every_kernel_has_a_target_and_its_target_the_features_it_needs():
    for kernel in q.INT8_KERNELS.values():
        preset = TARGETS[kernel.preset]
        assert preset.int8 == kernel.name and preset.arch == kernel.arch
        assert set(kernel.needs) <= set(preset.cpu_features()), kernel.name


def test_calibration_source_errors(tmp_path):
    from edgecv.edge.artifact import InputSpec

    spec = InputSpec(name="data", shape=(1, 3, 32, 32), color="RGB", mean=(0, 0, 0), std=(1, 1, 1), resize="stretch")
    with pytest.raises(EdgecvError, match="not found"):
        q.calibration_inputs(str(tmp_path / "missing.avi"), spec)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgecvError, match="no images"):
        q.calibration_inputs(str(tmp_path / "empty"), spec)


@pytest.mark.slow
@pytest.mark.parametrize("kernel", RUNNABLE, ids=[k.name if k else "none" for k in RUNNABLE])
def test_compile_int8_runs_on_the_edge_runtime_close_to_float32(tmp_path, detector_artifact, opencv_data, kernel):
    import cv2

    from conftest import run_cli, verify_lines
    from edgecv.edge.artifact import load_manifest
    from edgecv.edge.preprocess import preprocess
    from edgecv.edge.runtime import TvmModel

    kernel = _runnable(kernel)
    out = tmp_path / "int8"
    result = run_cli("compile", "ssd_512_mobilenet1.0_voc", "--input-size", "128", "--random-weights", "0",
                     "--target", kernel.preset, "--int8", "--verify", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "int8 differs from MXNet" in result.stderr + result.stdout  # --verify shows it, doesn't fail on it
    assert f"int8 kernel: {kernel.name}" in result.stderr + result.stdout
    verdicts = [line.split()[0] for line in verify_lines(result.stdout)]
    assert verdicts and "FAIL" not in verdicts and "diff" in verdicts, result.stdout  # expected differences
    manifest = load_manifest(out)
    assert manifest.quantization and kernel.name in manifest.quantization and "vtest.avi" in manifest.quantization
    assert manifest.int8_kernel == kernel.name and set(kernel.needs) <= set(manifest.target.cpu_features)
    with np.load(out / manifest.params) as stored:
        weights = [stored[k] for k in stored.files if stored[k].dtype == np.int8]
    assert len(weights) >= 20 and max(int(np.abs(w).max()) for w in weights) == kernel.weight_max
    x, _ = preprocess(cv2.imread(str(opencv_data / "basketball1.png")), manifest.input)
    want, got = TvmModel(detector_artifact)(x), TvmModel(out)(x)
    assert want.keys() == got.keys()
    # Random weights give near-uniform class scores, which int8's rounding reorders: bound the typical error and
    # the agreement, not the worst element (a wrong scale, zero point or packing leaves no correlation). Accuracy
    # on real weights is what `edgecv eval` measures (docs/int8.md).
    for key, least_correlation in (("boxes", 0.9), ("scores", 0.5)):
        assert np.all(np.isfinite(got[key]))
        difference = np.abs(got[key] - want[key]) / np.abs(want[key]).max()
        assert 0 < np.median(difference) < 0.03, (key, np.median(difference))
        correlation = np.corrcoef(got[key].ravel(), want[key].ravel())[0, 1]
        assert correlation > least_correlation, (key, correlation)


def test_a_kernel_applies_the_records_of_the_one_it_transfers_from_with_its_own_dot_product(tmp_path):
    """avx-vnni's records are avx2's with the dot product renamed in every trace (the same operands, the same
    packing: the same schedules); a build given them warns, one given another kernel's still refuses them."""
    from conftest import REPO
    from edgecv.compile.pipeline import RECORDS_DB, check_records_isa

    kernel, avx2 = q.INT8_KERNELS["avx-vnni"], q.INT8_KERNELS["avx2"]
    assert kernel.transfers == "avx2" and (kernel.lanes, kernel.activations) == (avx2.lanes, avx2.activations)
    shipped = REPO / "models/records/ssd_300_mobilenetv2_oid"
    theirs = (shipped / "x86-64-v3-int8" / RECORDS_DB[1]).read_text()
    into = q.transfer_records(shipped / "x86-64-v3-int8", kernel, tmp_path / "records")
    ours = (into / RECORDS_DB[1]).read_text()
    assert theirs.count(f'"{avx2.intrin}"') >= 20 and f'"{avx2.intrin}"' not in ours
    assert ours.replace(f'"{kernel.intrin}"', f'"{avx2.intrin}"') == theirs
    assert (into / RECORDS_DB[0]).read_bytes() == (shipped / "x86-64-v3-int8" / RECORDS_DB[0]).read_bytes()
    logged = []
    check_records_isa(shipped / "x86-64-v3-int8", resolve_target("x86-64-v3-vnni"), kernel, logged.append)
    assert len(logged) == 1 and "tuned for the avx2 int8 kernel and applied with avx-vnni's dot product" in logged[0]
    with pytest.raises(EdgecvError, match="tuned for the avx512-vnni int8 kernel; this build uses avx-vnni"):
        check_records_isa(shipped / "cascadelake-int8", resolve_target("x86-64-v3-vnni"), kernel, logged.append)
