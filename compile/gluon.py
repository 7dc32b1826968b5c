"""Load a GluonCV network (model zoo or exported checkpoint) and trace its raw outputs.

``SourceModel`` is the MXNet side of the compile step: the raw graph that becomes ONNX, and the
reference the compiled artifact is verified against (GluonCV's own decoding and NMS).
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from edgecv.compile.heads import FAMILIES, ClassifierFamily, ExportedDetectionFamily, Family
from edgecv.compile.weights import Weights, load_params_file, randomize
from edgecv.compile.zoo import ModelSpec
from edgecv.edge.artifact import DecodeSpec
from edgecv.edge.detections import Detections
from edgecv.edge.errors import ModelError, reason

INPUT_NAME = "data"
NMS = dict(nms_thresh=0.45, nms_topk=400, post_nms=100)  # GluonCV's defaults, mirrored in DecodeSpec


def _quiet_mxnet():
    os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")
    warnings.filterwarnings("ignore", module="mxnet")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    import mxnet as mx

    return mx


@dataclass
class SourceModel:
    spec: ModelSpec
    family: Family
    classes: tuple[str, ...]
    input_shape: tuple[int, int, int, int]
    raw_symbols: list          # mx.sym outputs, in family.outputs order
    params: dict               # name -> mx.nd.NDArray, exactly what raw_symbols need
    reference: object          # callable x -> GluonCV outputs (with NMS for detectors)
    decode: DecodeSpec | None = field(default=None)  # how the edge decodes the raw outputs (the manifest's)

    def __post_init__(self):
        if self.decode is None:
            self.decode = DecodeSpec(kind=self.family.decoder, **self.spec.decode)

    @property
    def aux_names(self) -> set[str]:
        mx = _quiet_mxnet()
        return set(mx.sym.Group(self.raw_symbols).list_auxiliary_states())

    def raw_nd(self, x) -> list:
        """The raw outputs of an NDArray input, as NDArrays (family.outputs order)."""
        mx = _quiet_mxnet()
        from mxnet import gluon

        if not hasattr(self, "_raw_block"):
            data = mx.sym.var(INPUT_NAME)
            block = gluon.SymbolBlock(self.raw_symbols, [data])
            block.collect_params().load_dict(self.params, ignore_extra=True)
            self._raw_block = block
        out = self._raw_block(x)
        return list(out) if isinstance(out, (list, tuple)) else [out]

    def raw(self, x: np.ndarray) -> dict[str, np.ndarray]:
        mx = _quiet_mxnet()
        return {o.name: a.asnumpy() for o, a in zip(self.family.outputs, self.raw_nd(mx.nd.array(x)))}

    def detections(self, x: np.ndarray) -> Detections:
        """GluonCV's own decoding + box_nms, in input pixels."""
        mx = _quiet_mxnet()
        ids, scores, boxes = (a.asnumpy()[0] for a in self.reference(mx.nd.array(x)))
        keep = ids[:, 0] >= 0
        return Detections(boxes[keep].astype(np.float32), scores[keep, 0].astype(np.float32),
                          ids[keep, 0].astype(np.int64))


def _check_size(spec: ModelSpec, size: int) -> None:
    if spec.fixed_size:
        if size != spec.input_size:
            raise ModelError(f"{spec.name} takes only input size {spec.input_size}", "drop --input-size")
        return
    if size % 32 or not 64 <= size <= 2048:
        raise ModelError(f"{spec.name} can't take input size {size}",
                         "use a multiple of 32 between 64 and 2048 (default "
                         f"{spec.input_size})")


def load_source_model(spec: ModelSpec, weights: Weights, input_size: int | None = None, log=lambda m: None,
                      classes: tuple[str, ...] | None = None) -> SourceModel:
    size = input_size or spec.input_size
    _check_size(spec, size)
    shape = (1, 3, size, size)
    if spec.is_checkpoint:
        return _load_checkpoint(spec, weights, shape, classes)
    return _load_zoo(spec, weights, shape, log)


def _load_zoo(spec: ModelSpec, weights: Weights, shape, log) -> SourceModel:
    mx = _quiet_mxnet()
    from gluoncv import model_zoo

    family = FAMILIES[spec.family]
    kwargs = {"pretrained": weights.pretrained}
    if family.task == "detection":
        kwargs["pretrained_base"] = False
    try:
        net = model_zoo.get_model(spec.name, **kwargs)
    except (OSError, ValueError, AssertionError, RuntimeError) as exc:
        if weights.pretrained:
            raise ModelError(f"could not fetch pretrained weights for {spec.name} "
                             f"({reason(exc, 120)})",
                             "this machine can't reach the model zoo: pass --weights FILE.params "
                             "or --random-weights SEED") from None
        raise
    if weights.params_file is not None:
        load_params_file(net, Path(weights.params_file))
    elif weights.random_seed is not None:
        randomize(net, shape, weights.random_seed, log, family.random_head_std)
    if family.task == "detection":
        net.set_nms(**NMS)
    try:
        net(mx.nd.zeros(shape))
        data = mx.sym.var(INPUT_NAME)
        raw = family.raw_outputs(net, data)
    except mx.base.MXNetError as exc:
        raise ModelError(f"{spec.name} can't take input size {shape[2]} ({reason(exc, 120)})",
                         f"use its default size {spec.input_size}") from None
    all_params = {name: p.data() for name, p in net.collect_params().items()}
    group = mx.sym.Group(raw)
    needed = set(group.list_arguments()) | set(group.list_auxiliary_states())
    params = {k: v for k, v in all_params.items() if k in needed}
    return SourceModel(spec, family, _classes(net), shape, raw, params, net)


def _classes(net) -> tuple[str, ...]:
    if hasattr(net, "classes"):
        return tuple(net.classes)
    from gluoncv.data.imagenet.classification import ImageNet1kAttr  # the zoo's classifiers are ImageNet-1k

    return tuple(ImageNet1kAttr().classes)


def _load_checkpoint(spec: ModelSpec, weights: Weights, shape, classes) -> SourceModel:
    mx = _quiet_mxnet()
    from mxnet import gluon

    symbol_file = spec.symbol_file
    params_file = Path(weights.params_file) if weights.params_file else spec.params_file
    if weights.random_seed is not None or weights.pretrained:
        raise ModelError("an exported checkpoint brings its own weights",
                         "drop --random-weights/--pretrained, or pass --weights FILE.params")
    if params_file is None or not params_file.is_file():
        raise ModelError(f"weights file not found: {params_file}", "pass --weights prefix-0000.params")
    try:
        sym = mx.sym.load(str(symbol_file))
        loaded = mx.nd.load(str(params_file))
    except mx.base.MXNetError as exc:
        raise ModelError(f"could not read the checkpoint {symbol_file} / {params_file} "
                         f"({reason(exc, 120)})", "re-export it with net.export()") from None
    params = {k.split(":", 1)[-1]: v for k, v in loaded.items()}
    if spec.family in FAMILIES and spec.family != ExportedDetectionFamily.name:
        return _load_family_checkpoint(spec, FAMILIES[spec.family], sym, params, shape, classes)
    nodes = json.loads(sym.tojson())["nodes"]
    nms_nodes = [n for n in nodes if n["op"] == "_contrib_box_nms"]
    input_name = next((n["name"] for n in nodes if n["op"] == "null" and n["name"] not in params), INPUT_NAME)
    if nms_nodes:
        family: Family = FAMILIES[ExportedDetectionFamily.name]
        source = nodes[nms_nodes[0]["inputs"][0][0]]
        internals = sym.get_internals()
        names = internals.list_outputs()
        raw = [internals[names.index(f"{source['name']}_output")]]
    else:
        family = FAMILIES[ClassifierFamily.name]
        last = nodes[-1]["op"].lower()
        raw = [sym if "softmax" in last else mx.sym.softmax(sym, axis=-1)]
    data = mx.sym.var(input_name)
    reference = gluon.SymbolBlock(sym, [data])
    try:
        reference.collect_params().load_dict(params, ignore_extra=True)
        reference(mx.nd.zeros(shape))
    except (AssertionError, mx.base.MXNetError) as exc:
        raise ModelError(f"checkpoint {symbol_file} does not run at input size {shape[2]} "
                         f"({reason(exc)})", "pass --input-size the model was exported for") from None
    if input_name != INPUT_NAME:
        raw = [mx.sym.Group(raw)(**{input_name: mx.sym.var(INPUT_NAME)})]
    group = mx.sym.Group(raw)
    needed = set(group.list_arguments()) | set(group.list_auxiliary_states())
    model = SourceModel(replace(spec, family=family.name, task=family.task), family, (), shape, raw,
                        {k: v for k, v in params.items() if k in needed}, reference)
    if classes is None:  # number them from what the graph outputs
        (out,) = model.raw(np.zeros(shape, np.float32)).values()
        count = out.shape[-1] if family.task == "classification" else int(out[0, :, 0].max()) + 1
        classes = tuple(f"class{i}" for i in range(count))
    model.classes = tuple(classes)
    return model


def _load_family_checkpoint(spec: ModelSpec, family: Family, sym, params: dict, shape, classes) -> SourceModel:
    """A shipped checkpoint of a known family (models/<name>/): its family traces the raw outputs and decodes
    the MXNet reference (``family.reference``)."""
    mx = _quiet_mxnet()

    inputs = [name for name in sym.list_arguments() if name not in params]
    if inputs != [INPUT_NAME]:
        raise ModelError(f"checkpoint {spec.symbol_file} has inputs {inputs}, expected [{INPUT_NAME!r}]",
                         "re-run the conversion: python -m edgecv.models.convert")
    outputs = [sym[i] for i in range(len(sym.list_outputs()))]
    raw = family.raw_outputs(lambda data: outputs, mx.sym.var(INPUT_NAME))
    group = mx.sym.Group(raw)
    needed = set(group.list_arguments()) | set(group.list_auxiliary_states())
    classes = classes or spec.class_names()
    model = SourceModel(spec, family, classes, shape, raw, {k: v for k, v in params.items() if k in needed}, None)
    try:
        out = model.raw(np.zeros(shape, np.float32))
    except mx.base.MXNetError as exc:
        raise ModelError(f"checkpoint {spec.symbol_file} does not run at input size {shape[2]} ({reason(exc)})",
                         "re-run the conversion: python -m edgecv.models.convert") from None
    if classes is not None and out["scores"].shape[-1] != len(classes):
        raise ModelError(f"{spec.name} scores {out['scores'].shape[-1]} classes, {spec.classes_file} names "
                         f"{len(classes)}", "re-run the conversion: python -m edgecv.models.convert")
    model.reference = family.reference(model.raw_nd, model.decode, NMS)
    return model
