"""Weights for a GluonCV network: pretrained, a user's ``.params`` file, or reproducible random ones.

Random weights must be numerically sane for compiled-vs-source comparisons to mean anything:
GluonCV's usual ``Normal(0.02)`` makes SSD's deep heads overflow float32. ``randomize`` therefore
calibrates the network the way BatchNorm would after training: every BatchNorm layer gets the mean
and variance of its own input (layer by layer, in graph order), and every convolution or dense layer
that no BatchNorm follows (the prediction heads) is scaled to the family's ``head_std``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecv.edge.errors import ModelError, reason

_NORMALISED_OPS = {"BatchNorm"}
_LINEAR_OPS = {"Convolution", "FullyConnected"}
# Calibration images: at least 4, more for small inputs (the deepest feature maps shrink to 1x1, and
# statistics of a few 1x1 maps are noise); about four 512x512 images' worth of pixels.
_CALIBRATION_PIXELS, _CALIBRATION_MAX_BATCH = 4 * 512 * 512, 32


@dataclass(frozen=True)
class Weights:
    """Where a network's weights come from: exactly one of the three."""

    pretrained: bool = False
    params_file: Path | None = None
    random_seed: int | None = None

    def describe(self) -> str:
        if self.pretrained:
            return "pretrained (GluonCV model zoo)"
        if self.params_file is not None:
            return f"file:{self.params_file}"
        return f"random:{self.random_seed}"


def load_params_file(net, path: Path) -> None:
    """Load a ``.params`` file into ``net`` with errors that name the file and the fix."""
    import mxnet as mx

    if not path.is_file():
        raise ModelError(f"weights file not found: {path}", "pass an existing .params file to --weights")
    try:
        loaded = mx.nd.load(str(path))
    except mx.base.MXNetError as exc:
        raise ModelError(f"weights file {path} is not a readable MXNet .params file ({reason(exc)})",
                         "re-export it with net.save_parameters()") from None
    if not isinstance(loaded, dict) or not loaded:
        raise ModelError(f"weights file {path} holds no named parameters",
                         "save it with net.save_parameters(), not nd.save of a list")
    try:
        net.load_parameters(str(path), ignore_extra=False)
    except (AssertionError, ValueError, mx.base.MXNetError) as exc:
        raise ModelError(f"weights file {path} does not fit this network ({reason(exc, 200)})",
                         "pass the .params saved from the same model name and class count") from None


def randomize(net, input_shape: tuple[int, ...], seed: int, log=lambda msg: None, head_std: float = 1.0) -> None:
    """Give ``net`` reproducible, numerically sane random weights (see the module docstring)."""
    import mxnet as mx
    from mxnet import gluon

    rng = np.random.RandomState(seed)
    mx.random.seed(seed)
    net.initialize(mx.init.Normal(0.02), force_reinit=True)
    # A batch of several inputs: statistics of one 1x1 feature map from one image would be degenerate.
    n = int(min(_CALIBRATION_MAX_BATCH, max(4, _CALIBRATION_PIXELS // (input_shape[2] * input_shape[3]))))
    batch = (n - n % 2,) + tuple(input_shape[1:])
    # Half white noise, half image-like noise: BatchNorm statistics that cover both keep the deep
    # layers in range on real photos too.
    half = (batch[0] // 2,) + batch[1:]
    x = mx.nd.array(np.concatenate([rng.standard_normal(half).astype(np.float32), _natural_noise(rng, half)]))
    net(x)  # materialise deferred shapes
    params = {name: p for name, p in net.collect_params().items() if not isinstance(p, gluon.Constant)}
    for name in sorted(params):
        p = params[name]
        if name.endswith(("gamma", "running_var")):
            value = np.ones(p.shape)
        elif name.endswith(("beta", "bias", "running_mean")):
            value = np.zeros(p.shape)
        else:
            fan_in = int(np.prod(p.shape[1:])) if len(p.shape) > 1 else 1
            value = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=p.shape)
        p.set_data(mx.nd.array(value.astype(np.float32)))
    _calibrate(net, x, params, log, head_std)


def _natural_noise(rng: np.random.RandomState, shape: tuple[int, ...]) -> np.ndarray:
    """Inputs with image-like statistics (large smooth regions plus detail), normalised like a photo.

    White noise would calibrate the layers for inputs no camera produces; real frames then drift
    far outside the calibrated range in the deep layers.
    """
    import cv2

    n, c, h, w = shape
    out = np.zeros(shape, np.float32)
    for cell, weight in ((64, 1.0), (16, 0.5), (4, 0.25)):
        coarse = rng.standard_normal((n, c, max(1, h // cell), max(1, w // cell))).astype(np.float32)
        for i in range(n):
            for j in range(c):
                out[i, j] += weight * cv2.resize(coarse[i, j], (w, h), interpolation=cv2.INTER_CUBIC)
    return (out - out.mean()) / out.std()


def _calibrate(net, x, params, log, head_std: float) -> None:
    import mxnet as mx
    from mxnet import gluon

    data = mx.sym.var("data")
    out = net(data)
    sym = mx.sym.Group(list(out)) if isinstance(out, (list, tuple)) else out
    graph = json.loads(sym.tojson())
    nodes = graph["nodes"]
    internals = sym.get_internals()
    names = internals.list_outputs()

    def output_of(entry):
        node = nodes[entry[0]]
        if node["op"] == "null":
            return None
        single = f"{node['name']}_output"
        return internals[names.index(single if single in names else f"{node['name']}_output{entry[1]}")]

    consumers: dict[int, set[str]] = {}
    for node in nodes:
        for entry in node.get("inputs", []):
            consumers.setdefault(entry[0], set()).add(node["op"])

    def evaluate(symbol):
        block = gluon.SymbolBlock(symbol, [data], params=net.collect_params())
        return block(x).asnumpy()

    calibrated = 0
    for index, node in enumerate(nodes):
        inputs = node.get("inputs", [])
        if node["op"] in _NORMALISED_OPS:
            act = evaluate(output_of(inputs[0]))
            axes = tuple(i for i in range(act.ndim) if i != 1)
            mean_name, var_name = nodes[inputs[3][0]]["name"], nodes[inputs[4][0]]["name"]
            params[mean_name].set_data(mx.nd.array(act.mean(axis=axes)))
            var = act.var(axis=axes)
            # a floor at a tenth of the layer's mean variance: no channel is amplified far beyond the rest
            params[var_name].set_data(mx.nd.array(var + 0.1 * float(var.mean()) + 1e-5))
            calibrated += 1
        elif node["op"] in _LINEAR_OPS and not consumers.get(index, set()) & _NORMALISED_OPS:
            std = float(evaluate(output_of([index, 0, 0])).std())
            weight = params[nodes[inputs[1][0]]["name"]]
            weight.set_data(weight.data() * (head_std / max(std, 1e-6)))
            calibrated += 1
    log(f"calibrated {calibrated} layers for numerically sane random weights")
