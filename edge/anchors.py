"""Anchor and prior-point generators for detectors whose graphs end before box decoding. One definition,
used by the edge runtime's decoder and by the compile step's MXNet reference alike.

``ssd_anchors`` follows MediaPipe's ``SsdAnchorsCalculator`` (TensorFlow Object Detection API's
multiple-grid anchor generator): per layer, a grid of ``ceil(input / stride)`` cells, each with one anchor
per aspect ratio at the layer's scale plus one at the geometric mean of this and the next scale; the lowest
layer optionally has only three (scale 0.1 at ratio 1, and ratios 2 and 0.5).
"""
from __future__ import annotations

import math

import numpy as np


def _scale(min_scale: float, max_scale: float, index: int, count: int) -> float:
    if count == 1:
        return (min_scale + max_scale) * 0.5
    return min_scale + (max_scale - min_scale) * index / (count - 1.0)


def ssd_anchors(options) -> np.ndarray:
    """(A, 4) anchors as centre x, centre y, width, height, in fractions of the input.

    ``options``: an ``edge.artifact.SsdAnchorOptions`` (MediaPipe's option names). Layers sharing a stride
    are merged into one grid, as MediaPipe does.
    """
    height, width = options.input_size
    strides, count = list(options.strides), len(options.strides)
    anchors = []
    layer = 0
    while layer < count:
        ratios: list[float] = []
        scales: list[float] = []
        last = layer
        while last < count and strides[last] == strides[layer]:
            scale = _scale(options.min_scale, options.max_scale, last, count)
            if last == 0 and options.reduce_boxes_in_lowest_layer:
                ratios += [1.0, 2.0, 0.5]
                scales += [0.1, scale, scale]
            else:
                ratios += list(options.aspect_ratios)
                scales += [scale] * len(options.aspect_ratios)
                if options.interpolated_scale_aspect_ratio > 0:
                    following = 1.0 if last == count - 1 else _scale(options.min_scale, options.max_scale,
                                                                       last + 1, count)
                    scales.append(math.sqrt(scale * following))
                    ratios.append(options.interpolated_scale_aspect_ratio)
            last += 1
        root = np.sqrt(np.asarray(ratios, np.float64))
        w = np.asarray(scales) * root
        h = np.asarray(scales) / root
        rows, cols = math.ceil(height / strides[layer]), math.ceil(width / strides[layer])
        ys, xs = np.meshgrid((np.arange(rows) + options.anchor_offset[0]) / rows,
                             (np.arange(cols) + options.anchor_offset[1]) / cols, indexing="ij")
        k = len(ratios)
        grid = np.stack([np.repeat(xs.reshape(-1), k), np.repeat(ys.reshape(-1), k),
                         np.tile(w, rows * cols), np.tile(h, rows * cols)], axis=1)
        anchors.append(grid)
        layer = last
    return np.concatenate(anchors).astype(np.float32)


def center_priors(input_size: tuple[int, int], strides, offset: float) -> np.ndarray:
    """(P, 3) prior points x, y, stride in input pixels for anchor-free heads (NanoDet/GFL), row-major per
    stride, strides in the order given."""
    height, width = input_size
    out = []
    for stride in strides:
        rows, cols = math.ceil(height / stride), math.ceil(width / stride)
        ys, xs = np.meshgrid((np.arange(rows) + offset) * stride, (np.arange(cols) + offset) * stride, indexing="ij")
        out.append(np.stack([xs.reshape(-1), ys.reshape(-1), np.full(rows * cols, float(stride))], axis=1))
    return np.concatenate(out).astype(np.float32)
