"""The ONNX -> Relax import that compile and tune share: ReLU6 bounds become constants."""
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
