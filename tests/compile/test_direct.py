"""The direct float32 convolution kernels (compile/direct.py): tiles that fit the registers, kernels that compute what
a convolution computes at every edge case of width, stride, padding and channel count, the FMA loop they were
written for in the machine code, and a model with them giving ONNX Runtime's outputs."""
from __future__ import annotations

import re

import numpy as np
import pytest

from edgecv.compile.direct import (DirectKernels, conv2d_direct, depthwise_direct, direct_schedule,
                                   pack_conv_weights, pack_depthwise_weights)

pytestmark = pytest.mark.tvm

AVX2, AVX512, NEON = DirectKernels(8, 16), DirectKernels(16, 32), DirectKernels(4, 32)


@pytest.mark.parametrize("kernels", [AVX2, AVX512, NEON], ids=["avx2", "avx512", "neon"])
def test_every_tile_fits_the_registers_and_the_chosen_one_wastes_little(kernels):
    for vectors, run in kernels.tiles():
        assert vectors * run + min(vectors, run) + 1 <= kernels.registers
    for channels, width in [(16, 150), (24, 75), (144, 75), (576, 19), (96, 19), (960, 10), (12, 19), (24, 1),
                            (256, 3), (1280, 10), (3, 300)]:
        block, run = kernels.conv_tile(channels, width)
        vectors = block // kernels.lanes
        assert block % kernels.lanes == 0 and 1 <= run <= width
        assert vectors * run + min(vectors, run) + 1 <= kernels.registers
        computed = -(-channels // block) * block * -(-width // run) * run
        if channels >= 4 * kernels.lanes and width >= 8:  # room to fill the registers without much waste
            assert vectors * run >= kernels.min_accumulators and computed <= 1.2 * channels * width, (channels, width)


def test_avx2_tiles_are_the_ones_measured_fastest():
    """On AVX2 (measured per kernel, one thread): 3 vectors x 4 pixels where it divides the row well; a run of 4 for
    a depthwise kernel (measured in the whole detector, two threads), one vector of channels."""
    assert AVX2.conv_tile(576, 19) == (24, 4)
    assert AVX2.conv_tile(960, 10) == (48, 2)
    assert AVX2.depthwise_tile(576, 19) == (8, 4) and AVX2.depthwise_tile(12, 7) == (12, 4)


@pytest.mark.parametrize("kernels, sums, per_vector", [(AVX2, 16, 2), (AVX512, 16, 1), (NEON, 4, 1)],
                         ids=["avx2", "avx512", "neon"])
def test_int8_tiles_leave_room_for_the_dot_products_temporaries(kernels, sums, per_vector):
    """An int8 tile counts in dot products of ``sums`` int32 sums (two AVX2 registers each), two registers kept
    aside for the dot product's temporaries; on AVX2, 16 sums by 5 pixels: the tile measured fastest."""
    int8 = kernels.int8(sums)
    assert int8.lanes == sums
    for dots, run in int8.tiles():
        assert per_vector * (dots * run + min(dots, run) + 1) + 2 <= kernels.registers
    if kernels is AVX2:
        assert {int8.conv_tile(k, w) for k, w in [(96, 150), (144, 75), (24, 75), (192, 38), (576, 19)]} == {(16, 5)}


def _conv_reference(x, w_ohwi, strides, padding, groups):
    """NHWC float64 convolution, the plain way."""
    n, h, wd, c = x.shape
    k, r, s, cg = w_ohwi.shape
    top, left, bottom, right = padding
    xp = np.pad(x.astype(np.float64), ((0, 0), (top, bottom), (left, right), (0, 0)))
    oh, ow = (h + top + bottom - r) // strides[0] + 1, (wd + left + right - s) // strides[1] + 1
    out = np.zeros((n, oh, ow, k))
    per_group = k // groups
    for g in range(groups):
        for i in range(r):
            for j in range(s):
                patch = xp[:, i:i + strides[0] * oh:strides[0], j:j + strides[1] * ow:strides[1], g * cg:(g + 1) * cg]
                out[..., g * per_group:(g + 1) * per_group] += patch @ w_ohwi[g * per_group:(g + 1) * per_group, i, j].T
    return out


def _build_and_run(compute, x, weights, bias, target):
    """``compute(x, w)`` + bias + ReLU6, scheduled by ``direct_schedule``, built for ``target`` and run here."""
    import tvm
    from tvm import te, tirx

    from edgecv.compile.direct import kernels_for

    tx = te.placeholder(x.shape, "float32", name="x")
    tw = te.placeholder(weights.shape, "float32", name="w")
    tb = te.placeholder(bias.shape, "float32", name="b")
    y = compute(tx, tw)
    out = te.compute(y.shape, lambda b, i, j, k: tirx.max(tirx.min(y[b, i, j, k] + tb[k], 6.0), 0.0), name="relu6")
    target = tvm.target.Target(target)
    scheduled = direct_schedule(te.create_prim_func([tx, tw, tb, out]), kernels_for(target).lanes)
    assert scheduled is not None
    library = tvm.compile(tvm.IRModule({"main": scheduled}), target=target)
    tensors = [tvm.runtime.tensor(a) for a in (x, weights, bias, np.zeros([int(d) for d in out.shape], np.float32))]
    library["main"](*tensors)
    return tensors[-1].numpy(), library


CASES = [  # (height, width, in channels, out channels, kernel, stride, padding (top, left, bottom, right))
    (19, 19, 96, 576, 1, 1, (0, 0, 0, 0)),    # width prime: the last tile runs past the edge
    (10, 7, 160, 24, 1, 1, (0, 0, 0, 0)),     # output channels no multiple of the block: padded, dropped
    (15, 15, 3, 32, 3, 2, (1, 1, 1, 1)),      # the first convolution: 3 input channels, stride 2
    (10, 10, 64, 12, 3, 2, (0, 0, 1, 1)),     # asymmetric padding (TF-style "same"), 12 output channels
    (3, 3, 128, 256, 3, 2, (1, 1, 1, 1)),     # a tiny SSD extra layer; its weights go over each row in chunks
    (32, 32, 512, 256, 1, 1, (0, 0, 0, 0)),   # 2 MB of input, 0.5 MB of weights: rows in groups of 4
    (19, 19, 576, 72, 1, 1, (0, 0, 0, 0)),    # an SSD head: 3 blocks (AVX2), so 19 rows in 4 parts, the last short
]


@pytest.mark.parametrize("h, w, c, k, r, stride, padding", CASES)
@pytest.mark.parametrize("target", ["x86-64-v3", "x86-64"], ids=["avx2", "sse2"])
def test_full_convolution_computes_the_convolution(h, w, c, k, r, stride, padding, target):
    from edgecv.compile.direct import kernels_for
    import tvm

    rng = np.random.default_rng(k)
    x = rng.standard_normal((1, h, w, c)).astype(np.float32)
    w_ohwi = (rng.standard_normal((k, r, r, c)) / np.sqrt(r * r * c)).astype(np.float32)
    bias = rng.standard_normal(k).astype(np.float32)
    spec = {"kind": "llvm", "mcpu": target, "num-cores": 2}
    kernels = kernels_for(tvm.target.Target(spec))
    ow = (w + padding[1] + padding[3] - r) // stride + 1
    block, run = kernels.conv_tile(k, ow)
    got, _ = _build_and_run(lambda tx, tw: conv2d_direct(tx, tw, (stride, stride), padding, run, k), x,
                            pack_conv_weights(w_ohwi, block), bias, spec)
    want = np.clip(_conv_reference(x, w_ohwi, (stride, stride), padding, 1) + bias, 0, 6)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("h, w, c, k, r, stride, padding", [CASES[2], CASES[0]], ids=["padded", "unpadded"])
def test_a_convolution_on_an_nchw_input_reads_it_without_a_transpose(h, w, c, k, r, stride, padding):
    rng = np.random.default_rng(c)
    x = rng.standard_normal((1, h, w, c)).astype(np.float32)
    w_ohwi = (rng.standard_normal((k, r, r, c)) / np.sqrt(r * r * c)).astype(np.float32)
    bias = rng.standard_normal(k).astype(np.float32)
    ow = (w + padding[1] + padding[3] - r) // stride + 1
    block, run = AVX2.conv_tile(k, ow)
    got, library = _build_and_run(
        lambda tx, tw: conv2d_direct(tx, tw, (stride, stride), padding, run, k, channels_first=True),
        np.ascontiguousarray(x.transpose(0, 3, 1, 2)), pack_conv_weights(w_ohwi, block), bias,
        {"kind": "llvm", "mcpu": "x86-64-v3", "num-cores": 2})
    want = np.clip(_conv_reference(x, w_ohwi, (stride, stride), padding, 1) + bias, 0, 6)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("h, c, k, r, expected", [
    (32, 512, 256, 1, "groups"),   # weights once per group of 4 rows + input once, against input once per block
    (13, 512, 1024, 3, "rows"),    # 19 MB of weights over 0.35 MB of input: every row per block
    (19, 96, 576, 1, "rows"),      # the input fits in cache anyway
    (38, 32, 192, 1, "row"),       # 24 KB of weights: row after row, every block of each
    (150, 16, 96, 1, "streamed"),  # 6 KB of weights: rows in parallel, each tile across every block, as depthwise
    (19, 576, 72, 1, "parts"),     # every row per block, but 3 blocks: rows in 4 parts, 12 tasks for 2 or 4 threads
])
def test_rows_go_through_the_blocks_of_channels_in_the_order_that_moves_least(h, c, k, r, expected):
    from tvm import te

    block, run = AVX2.conv_tile(k, h)
    tx, tw = te.placeholder((1, h, h, c), "float32"), te.placeholder((-(-k // block), r, r, c, block), "float32")
    y = conv2d_direct(tx, tw, (1, 1), (r // 2,) * 4, run, k)
    text = direct_schedule(te.create_prim_func([tx, tw, y]), 8).script()
    parallel = int(re.findall(r"T\.parallel\((?:T\.int64\()?(\d+)", text)[-1])  # its outer loop (after the padding's)
    blocks = -(-k // block)
    assert parallel == {"groups": h // 4 * blocks, "rows": blocks, "row": h * blocks, "streamed": h,
                        "parts": 4 * blocks}[expected], parallel


@pytest.mark.parametrize("h, w, c, stride, padding", [(19, 19, 576, 1, (1, 1, 1, 1)), (15, 15, 96, 2, (1, 1, 1, 1)),
                                                      (9, 7, 12, 1, (1, 1, 1, 1)), (8, 8, 32, 2, (0, 0, 1, 1))])
def test_depthwise_convolution_computes_the_convolution(h, w, c, stride, padding):
    """Including the padding, which the kernel reads as zeros without a padded copy, and 12 channels (no multiple
    of AVX2's 8: one block of 12)."""
    rng = np.random.default_rng(c)
    x = rng.standard_normal((1, h, w, c)).astype(np.float32)
    w_ohwi = rng.standard_normal((c, 3, 3, 1)).astype(np.float32)
    bias = rng.standard_normal(c).astype(np.float32)
    block, run = AVX2.depthwise_tile(c, (w + padding[1] + padding[3] - 3) // stride + 1)
    got, _ = _build_and_run(lambda tx, tw: depthwise_direct(tx, tw, (stride, stride), padding, run), x,
                            pack_depthwise_weights(w_ohwi, block), bias, {"kind": "llvm", "mcpu": "x86-64-v3"})
    want = np.clip(_conv_reference(x, w_ohwi, (stride, stride), padding, c) + bias, 0, 6)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("h, w, c, stride", [(19, 19, 576, 1), (15, 15, 96, 2)])
def test_a_depthwise_tile_is_one_block_of_channels_streamed_row_by_row(h, w, c, stride):
    """A tile's accumulators are ``run`` pixels by one block of channels (registers), not every channel of the
    input (which once spilled them to the stack and cleared them per tile); rows run in parallel, each streamed
    tile by tile across all its blocks of channels."""
    import tvm
    import tvm.s_tir as s_tir
    from tvm import te, tirx

    ow = (w + 2 - 3) // stride + 1
    block, run = AVX2.depthwise_tile(c, ow)
    assert block == AVX2.lanes
    tx, tw = te.placeholder((1, h, w, c), "float32"), te.placeholder((c // block, 3, 3, block), "float32")
    out = depthwise_direct(tx, tw, (stride, stride), (1, 1, 1, 1), run)
    func = direct_schedule(te.create_prim_func([tx, tw, out]), AVX2.lanes)
    lowered = tvm.IRModule({"main": func})
    for step in (s_tir.transform.LowerInitBlock(), s_tir.transform.PlanAndUpdateBufferAllocationLocation(),
                 s_tir.transform.ConvertBlocksToOpaque(), s_tir.transform.CompactBufferAllocation(),
                 s_tir.transform.LowerOpaqueBlock(), tirx.transform.FlattenBuffer()):
        lowered = step(lowered)
    script = lowered["main"].script()
    assert [int(n) for n in re.findall(r"alloc_local\(\((\d+),\)", script)] == [run * block]
    oh = (h + 2 - 3) // stride + 1
    assert re.findall(r"T\.parallel\((\d+)\)", script) == [str(oh)]


def _guarded(shape, at: str):
    """A float32 array with an inaccessible page right before it (``at="start"``) or right after it (``"end"``): a
    kernel reading one element outside it faults."""
    import ctypes
    import mmap

    nbytes, page = int(np.prod(shape)) * 4, mmap.PAGESIZE
    body = -(-nbytes // page) * page
    region = mmap.mmap(-1, body + 2 * page, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(region))
    libc = ctypes.CDLL(None)
    for guard in (base, base + page + body):
        assert libc.mprotect(ctypes.c_void_p(guard), page, 0) == 0
    start = base + page if at == "start" else base + page + body - nbytes
    array = np.frombuffer((ctypes.c_char * nbytes).from_address(start), np.float32).reshape(shape)
    array.flags.writeable = True
    return array, region


@pytest.mark.parametrize("at", ["start", "end"])
def test_kernels_read_nothing_outside_their_input(at):
    """The padding is read from clamped positions, never outside the input: the input sits right against an
    inaccessible page (a frame's own memory mapping can), before it or after it. (TVM simplifies each side of a select
    knowing its condition; a load under one would lose its clamp and read a row before the first.)"""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import numpy as np, tvm
        from tvm import te
        from edgecv.compile.direct import *
        from tests.compile.test_direct import _guarded
        x, keep = _guarded((1, 9, 10, 16), {at!r})
        x[:] = 1.0
        for kind in ("depthwise", "conv"):
            tx = te.placeholder(x.shape, "float32")
            if kind == "depthwise":
                tw, w = te.placeholder((2, 3, 3, 8), "float32"), np.ones((2, 3, 3, 8), np.float32)
                out = depthwise_direct(tx, tw, (1, 1), (1, 1, 1, 1), run=2)
            else:
                tw, w = te.placeholder((1, 1, 1, 16, 16), "float32"), np.ones((1, 1, 1, 16, 16), np.float32)
                out = conv2d_direct(tx, tw, (1, 1), (0, 0, 0, 0), run=3, out_channels=16)
            func = direct_schedule(te.create_prim_func([tx, tw, out]), 8)
            lib = tvm.compile(tvm.IRModule({{"main": func}}), target={{"kind": "llvm", "mcpu": "x86-64-v3"}})
            y = tvm.runtime.tensor(np.zeros([int(d) for d in out.shape], np.float32))
            lib["main"](tvm.runtime.from_dlpack(x), tvm.runtime.tensor(w), y)
            print(kind, y.numpy()[0, 0, 0, 0], y.numpy()[0, 4, 4, 0])
        """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["depthwise", "4.0", "9.0", "conv", "16.0", "16.0"]


@pytest.mark.parametrize("mcpu, register, other", [("x86-64-v3", "ymm", "zmm"), ("skylake-avx512", "zmm", None)])
def test_the_inner_loop_is_broadcast_and_fma_on_full_vector_registers(mcpu, register, other):
    """What the kernel is for: vbroadcastss + vfmadd231ps on the target's widest registers, accumulators never
    spilled to memory (no FMA with a memory destination's round trip: the FMAs outnumber the loads)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 19, 19, 96)).astype(np.float32)
    w_ohwi = rng.standard_normal((576, 1, 1, 96)).astype(np.float32)
    kernels = AVX2 if register == "ymm" else AVX512
    block, run = kernels.conv_tile(576, 19)
    import tvm

    from edgecv.compile.direct import kernels_for

    spec = {"kind": "llvm", "mcpu": mcpu}
    assert kernels_for(tvm.target.Target(spec)) == kernels
    tx, tw = (_placeholder(a) for a in (x, pack_conv_weights(w_ohwi, block)))
    func = _prim_func(conv2d_direct(tx, tw, (1, 1), (0, 0, 0, 0), run, 576), tx, tw)
    library = tvm.compile(tvm.IRModule({"main": direct_schedule(func, kernels.lanes)}), target=spec)
    asm = "\n".join(m.inspect_source("asm") for m in [library.mod, *library.mod.imports]
                    if m.kind in ("llvm", "static_library") or "asm" in str(m.kind))
    fmas = [line for line in asm.splitlines() if "vfmadd231ps" in line]
    assert len(fmas) >= block // kernels.lanes * run  # the whole tile unrolled
    assert all(f"%{register}" in line for line in fmas)
    assert other is None or f"%{other}" not in asm
    assert sum("vbroadcastss" in line for line in asm.splitlines()) >= run


def _placeholder(array):
    from tvm import te

    return te.placeholder(array.shape, "float32")


def _prim_func(y, *inputs):
    from tvm import te

    return te.create_prim_func([*inputs, y])


def _model(path):
    """conv 3x3 (3 -> 16, stride 2) + ReLU6, depthwise 3x3 + ReLU6, conv 1x1 (16 -> 24) + residual-free bias: a
    MobileNet's first block."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    init = {"w0": rng.normal(size=(16, 3, 3, 3)) / 5, "b0": rng.normal(size=16), "w1": rng.normal(size=(16, 1, 3, 3)),
            "b1": rng.normal(size=16), "w2": rng.normal(size=(24, 16, 1, 1)) / 4, "b2": rng.normal(size=24),
            "lo": np.array(0.0), "hi": np.array(6.0)}
    nodes = [helper.make_node("Conv", ["data", "w0", "b0"], ["c0"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Clip", ["c0", "lo", "hi"], ["r0"]),
             helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], group=16),
             helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["out"])]
    graph = helper.make_graph(nodes, "block",
                              [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 33, 33])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in init.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))


def test_a_model_with_direct_kernels_gives_onnx_runtimes_outputs(tmp_path):
    import onnxruntime as ort
    import tvm
    from tvm import relax

    from edgecv.compile.build import _compile_tuned, import_onnx
    from edgecv.compile.direct import kernels_for
    from edgecv.compile.leftovers import Kernels

    _model(tmp_path / "m.onnx")
    target = tvm.target.Target({"kind": "llvm", "mcpu": "x86-64-v3", "num-cores": 2})
    logged = []
    mod, params = import_onnx(tmp_path / "m.onnx", "data", (1, 3, 33, 33), log=logged.append,
                              direct=kernels_for(target))
    # the first convolution reads the NCHW input itself; the only transpose left is the output's, back to NCHW
    assert "R.call_tir(direct_conv2d, (data," in mod["main"].script()
    assert mod["main"].script().count("R.permute_dims(") == 1
    (tmp_path / "records").mkdir()
    executable, params = _compile_tuned(mod, params, target, tmp_path / "records", False, logged.append,
                                        Kernels(direct_lanes=8))
    assert "direct kernels: 2 convolutions, 1 depthwise ones" in logged
    assert "direct schedule for 3 convolutions" in logged
    assert not [line for line in logged if "warning" in line], logged
    x = np.random.default_rng(6).normal(size=(1, 3, 33, 33)).astype(np.float32)
    got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x), *params).numpy()
    want = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"data": x})[0]
    assert got.shape == want.shape == (1, 24, 17, 17)  # NCHW, as the model's output is, though it ran NHWC
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_only_the_models_input_is_read_channels_first(tmp_path):
    """The first convolution reads the NCHW input itself; one after an op the layout pass leaves channels-first (here
    reshapes; in YOLOv3 its upsampling) reads the transposed tensor, so the ops before it keep writing NHWC."""
    import onnx
    import tvm
    from onnx import TensorProto, helper, numpy_helper

    from edgecv.compile.build import import_onnx
    from edgecv.compile.direct import kernels_for

    rng = np.random.default_rng(7)
    init = {"w0": rng.normal(size=(16, 3, 3, 3)), "w1": rng.normal(size=(8, 16, 3, 3)),
            "flat": np.array([1, 16, 17 * 17]), "square": np.array([1, 16, 17, 17])}
    nodes = [helper.make_node("Conv", ["data", "w0"], ["c0"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Reshape", ["c0", "flat"], ["r0"]), helper.make_node("Reshape", ["r0", "square"], ["r1"]),
             helper.make_node("Conv", ["r1", "w1"], ["out"], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 33, 33])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(v.astype(np.int64 if v.ndim == 1 else np.float32), k)
                               for k, v in init.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(tmp_path / "m.onnx"))
    target = tvm.target.Target({"kind": "llvm", "mcpu": "x86-64-v3", "num-cores": 2})
    mod, _ = import_onnx(tmp_path / "m.onnx", "data", (1, 3, 33, 33), direct=kernels_for(target))
    from edgecv.compile.rewrite import static_shape

    inputs = {call.args[0].name_hint: list(static_shape(call.args[1].fields[0]))
              for block in mod["main"].body.blocks for call in (binding.value for binding in block.bindings)
              if isinstance(call, tvm.relax.Call) and isinstance(call.args[0], tvm.ir.GlobalVar)
              and call.args[0].name_hint.startswith("direct_conv2d")}
    assert inputs == {"direct_conv2d": [1, 3, 33, 33], "direct_conv2d1": [1, 17, 17, 16]}, inputs


def test_a_direct_kernel_left_with_the_basic_schedule_is_reported(tmp_path):
    """A direct kernel whose schedule fails (here: none given) still runs, but many times slower: said, not silent."""
    import tvm

    from edgecv.compile.build import import_onnx
    from edgecv.compile.direct import kernels_for
    from edgecv.compile.leftovers import Kernels, schedule_leftovers

    _model(tmp_path / "m.onnx")
    target = tvm.target.Target({"kind": "llvm", "mcpu": "x86-64-v3", "num-cores": 2})
    mod, _ = import_onnx(tmp_path / "m.onnx", "data", (1, 3, 33, 33), direct=kernels_for(target))
    logged = []
    schedule_leftovers(tvm.relax.transform.FuseTIR()(tvm.relax.transform.FuseOps()(mod)), logged.append, Kernels())
    assert any("warning: 3 direct kernels could not take their schedule" in line for line in logged), logged


def test_tune_leaves_the_direct_kernels_alone(tmp_path):
    import tvm

    from edgecv.compile.build import import_onnx
    from edgecv.compile.direct import kernels_for
    from edgecv.compile.tune import DIRECT_KERNEL, extract_tasks

    _model(tmp_path / "m.onnx")
    target = tvm.target.Target({"kind": "llvm", "mcpu": "x86-64-v3", "num-cores": 2})
    mod, _ = import_onnx(tmp_path / "m.onnx", "data", (1, 3, 33, 33), direct=kernels_for(target))
    tasks = extract_tasks(mod, target, prepack=False)
    direct = [t for t in tasks if t.skip == DIRECT_KERNEL]
    assert len(direct) == 3 and all(t.name.startswith("fused_direct_") for t in direct)
