"""MXNet symbol -> ONNX, shapes folded with onnxsim, outputs named as the family names them."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecv.compile.gluon import INPUT_NAME, SourceModel, _quiet_mxnet



def export_onnx(model: SourceModel, path: Path) -> Path:
    mx = _quiet_mxnet()
    import onnx
    from onnxsim import simplify

    path = Path(path)
    mx.onnx.export_model(mx.sym.Group(model.raw_symbols), model.params, [model.input_shape], [np.float32],
                         str(path), verbose=False)
    graph = onnx.load(str(path))
    graph, ok = simplify(graph)
    if not ok:
        raise RuntimeError("onnxsim could not validate the simplified graph")
    _name_io(graph, [o.name for o in model.family.outputs])
    onnx.save(graph, str(path))
    return path


def _name_io(graph, output_names: list[str]) -> None:
    """Give the graph input and outputs stable names (``data``; ``boxes``, ``scores`` ...)."""
    import onnx

    g = graph.graph
    assert g.input[0].name == INPUT_NAME, g.input[0].name
    for out, name in zip(g.output, output_names):
        if out.name != name:
            g.node.append(onnx.helper.make_node("Identity", [out.name], [name]))
            out.name = name
