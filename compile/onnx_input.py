"""ONNX detectors compiled as they are (``edgecv compile model.onnx --decoder FAMILY``, or a zoo entry with ``onnx:``).

There is no MXNet source: the reference is ONNX Runtime on the same graph. A decoder plug-in per family
(``ONNX_FAMILIES``) turns the graph's own outputs into the raw outputs an edge decoder reads, and says how
(the manifest's ``decode``). Adding a family is adding one class.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from edgecv.compile.gluon import INPUT_NAME
from edgecv.compile.heads import OutputInfo
from edgecv.compile.zoo import ModelSpec
from edgecv.edge.artifact import DecodeSpec
from edgecv.edge.decode import decode_detections
from edgecv.edge.detections import Detections
from edgecv.edge.errors import ModelError, reason


def _load(path: Path):
    import onnx

    try:
        return onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError and others for a file that isn't a model
        raise ModelError(f"{path} is not a readable ONNX model ({reason(exc)})", "pass an .onnx file") from None


def _dims(value) -> list[int]:
    return [d.dim_value for d in value.type.tensor_type.shape.dim]


class OnnxFamily:
    """A decoder plug-in: adapts an ONNX detector's outputs to what ``decoder`` (edge/decode.py) reads."""

    name: ClassVar[str]
    task: ClassVar[str] = "detection"
    decoder: ClassVar[str]
    outputs: ClassVar[tuple[OutputInfo, ...]]
    default_input: ClassVar[dict]     # preprocessing for a bare .onnx path (a zoo entry says its own)
    default_groups: ClassVar[str | None] = None

    def input_size(self, path: Path) -> int:
        graph = _load(path).graph
        initializers = {t.name for t in graph.initializer}
        inputs = [i for i in graph.input if i.name not in initializers]
        dims = _dims(inputs[0]) if len(inputs) == 1 else []
        if len(dims) != 4 or dims[1] != 3 or dims[2] != dims[3] or dims[2] <= 0:
            raise ModelError(f"{path} must have one fixed square NCHW image input, has "
                             f"{[(i.name, _dims(i)) for i in inputs]}", "export it with a fixed (1, 3, N, N) input")
        return dims[2]

    def adapt(self, model, spec: ModelSpec, classes: tuple[str, ...]) -> tuple[object, dict]:
        """(graph with outputs named as ``outputs``, options for DecodeSpec)."""
        raise NotImplementedError  # pragma: no cover - interface


class NanoDetFamily(OnnxFamily):
    """NanoDet (GFL head): per stride, sigmoid class scores (1, P, C) and side distributions (1, P, 4 * (reg_max + 1)).

    The per-stride outputs are concatenated (largest grid first); strides and bins are read from their shapes.
    """

    name = "nanodet"
    decoder = "gfl"
    outputs = (OutputInfo("scores", "(1, P, C) sigmoid class scores per prior point"),
               OutputInfo("box_distribution", "(1, P, 4 * (reg_max + 1)) left, top, right, bottom bin logits"))
    # NanoDet's own preprocessing: BGR, ImageNet mean/std in BGR order
    default_input = {"resize": "stretch", "color": "BGR", "mean": [103.53, 116.28, 123.675],
                     "std": [57.375, 57.12, 58.395]}
    default_groups = "coco"

    def adapt(self, model, spec, classes):
        import onnx
        from onnx import helper

        graph = model.graph
        size = spec.input_size
        by_points: dict[int, dict[str, str]] = {}
        for out in graph.output:
            dims = _dims(out)
            if len(dims) != 3 or dims[0] != 1:
                raise ModelError(f"NanoDet output {out.name} has shape {dims}, expected (1, points, width)",
                                 "pass a NanoDet graph with per-stride score and box outputs")
            kind = "scores" if dims[2] == len(classes) else "box_distribution"
            by_points.setdefault(dims[1], {})[kind] = (out.name, dims[2])
        strides, widths = [], set()
        for points in sorted(by_points, reverse=True):
            pair = by_points[points]
            stride = size / math.sqrt(points)
            if set(pair) != {"scores", "box_distribution"} or stride != int(stride):
                raise ModelError(f"NanoDet outputs don't pair up into square grids: {dict(by_points)} "
                                 f"(with {len(classes)} classes)", "pass --classes with the model's class names")
            strides.append(int(stride))
            widths.add(pair["box_distribution"][1])
        if len(widths) != 1 or next(iter(widths)) % 4:
            raise ModelError(f"NanoDet box outputs have widths {sorted(widths)}", "expected one width, 4 * bins")
        order = [by_points[p] for p in sorted(by_points, reverse=True)]
        del graph.output[:]
        for info in self.outputs:
            graph.node.append(helper.make_node("Concat", [pair[info.name][0] for pair in order], [info.name], axis=1))
            shape = [1, sum(by_points), order[0][info.name][1]]
            graph.output.append(helper.make_tensor_value_info(info.name, onnx.TensorProto.FLOAT, shape))
        gfl = {"input_size": [size, size], "strides": strides, "reg_max": next(iter(widths)) // 4 - 1,
               **(spec.decode.get("gfl") or {})}
        return model, {"gfl": gfl}


ONNX_FAMILIES: dict[str, OnnxFamily] = {f.name: f for f in (NanoDetFamily(),)}


def _rename_input(graph, name: str) -> None:
    initializers = {t.name for t in graph.initializer}
    (value,) = [i for i in graph.input if i.name not in initializers]
    old, value.name = value.name, name
    for node in graph.node:
        node.input[:] = [name if n == old else n for n in node.input]


@dataclass
class OnnxSourceModel:
    """The compile step's source for an ONNX detector: the adapted graph, run by ONNX Runtime as the reference."""

    spec: ModelSpec
    family: OnnxFamily
    classes: tuple[str, ...]
    input_shape: tuple[int, int, int, int]
    graph: bytes
    decode: DecodeSpec
    reference_name: str = "ONNX Runtime"
    _session: object = field(default=None, repr=False)

    def write_onnx(self, path: Path) -> Path:
        Path(path).write_bytes(self.graph)
        return Path(path)

    def raw(self, x: np.ndarray) -> dict[str, np.ndarray]:
        if self._session is None:
            import onnxruntime as ort

            self._session = ort.InferenceSession(self.graph, providers=["CPUExecutionProvider"])
        return dict(zip([o.name for o in self.family.outputs], self._session.run(None, {INPUT_NAME: x})))

    def detections(self, x: np.ndarray) -> Detections:
        """ONNX Runtime's raw outputs through the same decoder (the graph itself is what's compared)."""
        return decode_detections(self.raw(x), self.decode)


def load_onnx_model(spec: ModelSpec, classes: tuple[str, ...] | None = None) -> OnnxSourceModel:
    import onnx
    from onnxsim import simplify

    family = ONNX_FAMILIES[spec.family]
    classes = tuple(classes or spec.class_names() or _coco_classes())
    model = _load(spec.onnx_file)
    _rename_input(model.graph, INPUT_NAME)
    shape = (1, 3, spec.input_size, spec.input_size)
    try:
        model, ok = simplify(model, overwrite_input_shapes={INPUT_NAME: list(shape)})
    except Exception as exc:  # onnxsim raises whatever ONNX Runtime or the checker raised
        raise ModelError(f"{spec.onnx_file} could not be simplified ({reason(exc, 200)})",
                         "check the graph with onnx.checker / ONNX Runtime") from None
    if not ok:
        raise ModelError(f"onnxsim could not validate the simplified {spec.onnx_file}", "check the graph")
    model, options = family.adapt(model, spec, classes)
    onnx.checker.check_model(model)
    decode = DecodeSpec(kind=family.decoder, **options)
    return OnnxSourceModel(spec, family, classes, shape, model.SerializeToString(), decode)


def _coco_classes() -> tuple[str, ...]:
    from gluoncv.data import COCODetection

    return tuple(COCODetection.CLASSES)
