"""The ONNX -> Relax import that compile and tune share (ReLU6 bounds become constants), and the basic schedule
for kernels without tuning records."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgecv.compile.build import clip_bounds_as_constants, import_onnx


def _conv_relu6(path):
    weight = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32), "w")
    low = numpy_helper.from_array(np.array(0, np.float32), "lo")
    high = numpy_helper.from_array(np.array(6, np.float32), "hi")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["data", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Clip", ["c", "lo", "hi"], ["out"])],
        "relu6", [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 8, 8])], [weight, low, high])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, str(path))
    return model


def test_clip_bounds_become_constants_and_the_result_is_the_same(tmp_path):
    import tvm
    from tvm import relax

    model = _conv_relu6(tmp_path / "m.onnx")
    rewritten = clip_bounds_as_constants(onnx.load(str(tmp_path / "m.onnx")))
    assert [i.name for i in rewritten.graph.initializer] == ["w"]
    assert [n.op_type for n in rewritten.graph.node] == ["Constant", "Constant", "Conv", "Clip"]
    onnx.checker.check_model(rewritten)

    mod, params = import_onnx(tmp_path / "m.onnx", "data", (1, 3, 8, 8))
    assert len(params) == 1  # only the convolution's weights are weights
    assert "isnan" not in relax.transform.FoldConstant()(mod).script()  # the bounds fold: no run-time guards
    x = np.random.default_rng(1).normal(scale=4, size=(1, 3, 8, 8)).astype(np.float32)
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x), *params).numpy()
    import onnxruntime

    want = onnxruntime.InferenceSession(model.SerializeToString()).run(None, {"data": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert got.min() == 0 and got.max() == 6  # both bounds reached, so both were applied


def _depthwise_bias_relu6(path):
    """A stride-2 depthwise convolution with bias and ReLU6: the shape of the kernels tuning leaves untuned."""
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(rng.normal(size=(8, 1, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(size=(8,)).astype(np.float32), "b"),
             numpy_helper.from_array(np.array(0, np.float32), "lo"), numpy_helper.from_array(np.array(6, np.float32), "hi")]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["data", "w", "b"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2], group=8),
         helper.make_node("Clip", ["c", "lo", "hi"], ["out"])],
        "dw", [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 8, 32, 32])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 8, 16, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, str(path))
    return model


def test_kernels_without_records_get_a_basic_schedule_with_the_same_result(tmp_path):
    import onnxruntime
    import tvm
    from tvm import relax

    from edgecv.compile.build import _compile_tuned, apply_records
    from edgecv.compile.leftovers import SCHEDULED, schedule_leftovers

    model = _depthwise_bias_relu6(tmp_path / "dw.onnx")
    mod, params = import_onnx(tmp_path / "dw.onnx", "data", (1, 8, 32, 32))
    target = tvm.target.Target({"kind": "llvm", "num-cores": 2})
    records = tmp_path / "records"
    records.mkdir()  # no records at all: every kernel is a leftover
    messages = []
    staged = schedule_leftovers(apply_records(mod, target, records, prepack=False), messages.append)
    kernels = {gv.name_hint: f for gv, f in staged.functions.items() if not isinstance(f, relax.Function)}
    conv = next(f for name, f in kernels.items() if "conv2d" in name)
    assert conv.attrs[SCHEDULED]
    text = conv.script()
    # channels in parallel, each padding its own input plane inside that loop (a depthwise channel reads only it)
    assert text.count("T.parallel") == 1 and text.index('T.sblock("pad_temp")') > text.index("T.parallel")
    assert messages and messages[0].startswith("basic schedule for 1 kernels")

    x = np.random.default_rng(3).normal(scale=3, size=(1, 8, 32, 32)).astype(np.float32)
    executable, params = _compile_tuned(mod, params, target, records, prepack=False)
    got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x), *params).numpy()
    want = onnxruntime.InferenceSession(model.SerializeToString()).run(None, {"data": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert got.min() == 0 and got.max() == 6


def test_basic_schedule_leaves_other_shapes_alone(tmp_path):
    from tvm import relax

    from edgecv.compile.leftovers import basic_schedule

    graph = helper.make_graph([helper.make_node("Softmax", ["data"], ["out"], axis=1)], "softmax",
                              [helper.make_tensor_value_info("data", TensorProto.FLOAT, [4, 16])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [4, 16])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(tmp_path / "s.onnx"))
    mod, _ = import_onnx(tmp_path / "s.onnx", "data", (4, 16))
    mod = relax.transform.LegalizeOps()(mod)
    softmax = next(f for f in mod.functions.values() if not isinstance(f, relax.Function))
    assert basic_schedule(softmax) is None  # a max and a sum: two reductions, not the convolution's shape


def test_a_full_convolution_pads_once_not_per_output_channel(tmp_path):
    """Each output channel of a full convolution reads every input channel: padding per output channel would
    redo the whole padding each time, so it is done once, in parallel, before the convolution."""
    import tvm
    from tvm import relax

    from edgecv.compile.build import apply_records
    from edgecv.compile.leftovers import schedule_leftovers

    _conv_relu6(tmp_path / "m.onnx")
    mod, _ = import_onnx(tmp_path / "m.onnx", "data", (1, 3, 8, 8))
    (tmp_path / "records").mkdir()
    staged = schedule_leftovers(apply_records(mod, tvm.target.Target({"kind": "llvm"}), tmp_path / "records",
                                              prepack=False))
    text = next(f for gv, f in staged.functions.items() if "conv2d" in gv.name_hint).script()
    assert text.count("T.parallel") == 2  # the padding's loop, then the convolution's channels
    assert text.index('T.sblock("pad_temp")') < text.index("T.parallel", text.index("T.parallel") + 1)


def test_element_wise_kernels_become_one_parallel_vectorized_loop_nest():
    """int8's quantization between two kernels (multiply, round, add, clip, cast), as the importer leaves it: a loop
    nest per operator, each writing a scratch buffer. Scheduled: one nest, rows in parallel, channels in vectors,
    the same bytes."""
    import tvm
    from tvm import te, tirx

    from edgecv.compile.leftovers import ELEMENTWISE, elementwise_schedule

    x = te.placeholder((1, 38, 38, 32), "float32", name="x")
    scaled = te.compute(x.shape, lambda *i: x[i] * 8.0, name="multiply")
    rounded = te.compute(x.shape, lambda *i: tirx.nearbyint(scaled[i]), name="round")
    shifted = te.compute(x.shape, lambda *i: rounded[i] + 100.0, name="add")
    clipped = te.compute(x.shape, lambda *i: tirx.max(tirx.min(shifted[i], 255.0), 0.0), name="clip")
    out = te.compute(x.shape, lambda *i: clipped[i].astype("uint8"), name="cast")
    func = elementwise_schedule(te.create_prim_func([x, out]), lanes=8)
    assert func is not None and func.attrs[ELEMENTWISE]
    text = func.script()
    assert [line for line in text.splitlines() if "T.sblock(" in line and '"root"' not in line] == \
        ['                with T.sblock("cast"):']
    assert "T.parallel" in text and "T.vectorized(8)" in text and "alloc_buffer" not in text
    xs = np.random.default_rng(4).normal(scale=10, size=(1, 38, 38, 32)).astype(np.float32)
    got = tvm.runtime.tensor(np.zeros(xs.shape, np.uint8))
    tvm.compile(tvm.IRModule({"main": func}), target="llvm")["main"](tvm.runtime.tensor(xs), got)
    np.testing.assert_array_equal(got.numpy(), np.clip(np.rint(xs * 8) + 100, 0, 255).astype(np.uint8))
    # a reduction is not element-wise: left to the other schedules
    k = te.reduce_axis((0, 32), "k")
    summed = te.compute((1, 38, 38), lambda b, h, w: te.sum(x[b, h, w, k], axis=k), name="sum")
    assert elementwise_schedule(te.create_prim_func([x, summed]), lanes=8) is None
