"""Family adapters: a GluonCV network -> the raw outputs the edge runtime decodes.

GluonCV's detectors end in ``box_nms``, which TVM's Relax ONNX importer cannot take, and their
NMS-free outputs tile every box once per class. Each adapter instead traces the network up to
per-anchor boxes and per-class scores; decoding and NMS run in the edge runtime (edge/decode.py).

Adding a family is adding one class to ``FAMILIES``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class OutputInfo:
    name: str
    description: str


class Family:
    """Traces a GluonCV network symbolically into the raw outputs named in ``outputs``."""

    name: ClassVar[str]
    task: ClassVar[str]
    decoder: ClassVar[str]
    outputs: ClassVar[tuple[OutputInfo, ...]]
    # Output std of the prediction heads under random weights (see compile/weights.py).
    random_head_std: ClassVar[float] = 1.0

    def raw_outputs(self, net, data):  # pragma: no cover - interface
        raise NotImplementedError


class SSDFamily(Family):
    """SSD: softmax class scores without background, boxes decoded against the anchors."""

    name = "ssd"
    task = "detection"
    decoder = "boxes_scores"
    outputs = (
        OutputInfo("boxes", "(1, A, 4) x1,y1,x2,y2 in input pixels"),
        OutputInfo("scores", "(1, A, C) class probabilities, background removed"),
    )

    def raw_outputs(self, net, data):
        from mxnet import autograd
        import mxnet as mx

        # In training mode GluonCV's SSD returns (cls_preds, box_preds, anchors) before decoding and
        # NMS. We only trace a symbol here: BatchNorm's mode is decided when the graph runs, so the
        # traced graph still runs in inference mode.
        with autograd.train_mode():
            cls_preds, box_preds, anchors = net(data)
        boxes = net.bbox_decoder(box_preds, anchors)
        scores = mx.sym.softmax(cls_preds, axis=-1)
        scores = mx.sym.slice_axis(scores, axis=-1, begin=1, end=None)
        return [boxes, scores]


class YOLO3Family(Family):
    """YOLOv3: boxes from every output scale, scores = sigmoid(class) * sigmoid(objectness)."""

    name = "yolo3"
    task = "detection"
    decoder = "boxes_scores"
    outputs = SSDFamily.outputs
    # On real photos the deep YOLO blocks run ~10x hotter than on the calibration inputs; unit-std
    # heads would then overflow exp() in the box decoder and saturate every score at 1.
    random_head_std = 0.1

    def raw_outputs(self, net, data):
        from gluoncv.model_zoo.yolo.yolo3 import _upsample
        from mxnet import autograd
        import mxnet as mx

        # GluonCV's YOLOV3.hybrid_forward, stopped before its per-class tiling. Each output block in
        # training mode returns its decoded boxes and its raw objectness and class logits; this only
        # traces a symbol, so the graph itself still runs in inference mode.
        routes, x = [], data
        for stage in net.stages:
            x = stage(x)
            routes.append(x)
        boxes, scores = [], []
        for i, (block, output) in enumerate(zip(net.yolo_blocks, net.yolo_outputs)):
            x, tip = block(x)
            with autograd.train_mode():
                bbox, _, _, objness, class_pred, _, _ = output(tip)
            boxes.append(bbox)
            probability = mx.sym.broadcast_mul(mx.sym.sigmoid(class_pred), mx.sym.sigmoid(objness))
            scores.append(mx.sym.reshape(probability, shape=(0, -1, len(net.classes))))
            if i >= len(routes) - 1:
                break
            x = net.transitions[i](x)
            route = routes[::-1][i + 1]
            x = mx.sym.concat(mx.sym.slice_like(_upsample(x, stride=2), route * 0, axes=(2, 3)), route, dim=1)
        return [mx.sym.concat(*boxes, dim=1), mx.sym.concat(*scores, dim=1)]


class ClassifierFamily(Family):
    """Image classifiers: softmax probabilities."""

    name = "classifier"
    task = "classification"
    decoder = "classification"
    outputs = (OutputInfo("probabilities", "(1, C) softmax over classes"),)

    def raw_outputs(self, net, data):
        import mxnet as mx

        return [mx.sym.softmax(net(data), axis=-1)]


class ExportedDetectionFamily(Family):
    """A user's exported GluonCV detector (``net.export``): the graph is cut before ``box_nms``.

    Its output rows are (class id, score, x1, y1, x2, y2), one per anchor and class.
    """

    name = "gluoncv-exported"
    task = "detection"
    decoder = "id_score_box"
    outputs = (OutputInfo("detections", "(1, N, 6) class id, score, x1,y1,x2,y2 in input pixels"),)

    def raw_outputs(self, net, data):  # the symbol is cut in gluon.load_symbol_checkpoint
        return [net(data)]


class MediaPipeSSDFamily(Family):
    """A TensorFlow Object Detection API SSD as MediaPipe ships it, imported into an MXNet checkpoint (models/convert).

    Its graph already ends before decoding, in (1, A, 4) box encodings and (1, A, 1 + C) class logits with the
    background first. The raw outputs keep the encodings and turn the logits into sigmoid scores (MediaPipe's
    ``sigmoid_score``) without the background. Boxes are decoded against the anchors of ``decode.ssd``
    (edge/anchors.py): by GluonCV's box coder and ``box_nms`` for the MXNet reference (``reference``), by the
    edge runtime's numpy decoder (``ssd_anchors``) on the box.
    """

    name = "mediapipe_ssd"
    task = "detection"
    decoder = "ssd_anchors"
    outputs = (
        OutputInfo("box_encodings", "(1, A, 4) yc, xc, h, w against the anchors, times decode.ssd.box_scales"),
        OutputInfo("scores", "(1, A, C) sigmoid class scores, background removed"),
    )

    def raw_outputs(self, net, data):
        import mxnet as mx

        encodings, logits = net(data)
        return [encodings, mx.sym.slice_axis(mx.sym.sigmoid(logits), axis=-1, begin=1, end=None)]

    def reference(self, raw, decode, nms: dict):
        """x -> (ids, scores, boxes) as GluonCV's SSD returns them, in input pixels, from ``raw(x)`` (NDArrays)."""
        import mxnet as mx
        from gluoncv.nn.coder import NormalizedBoxCenterDecoder

        from edgecv.edge.anchors import ssd_anchors

        options = decode.ssd
        height, width = options.input_size
        anchors = mx.nd.array(ssd_anchors(options))[None]          # cx, cy, w, h in fractions of the input
        sy, sx, sh, sw = options.box_scales
        coder = NormalizedBoxCenterDecoder(stds=(1 / sx, 1 / sy, 1 / sw, 1 / sh))
        scale = mx.nd.array([width, height, width, height])

        def run(x):
            encodings, scores = raw(x)
            # GluonCV's coder reads dx, dy, dw, dh: the TF order is dy, dx, dh, dw
            xywh = mx.nd.concat(*(encodings.slice_axis(axis=-1, begin=i, end=i + 1) for i in (1, 0, 3, 2)), dim=-1)
            boxes = mx.nd.broadcast_mul(coder(xywh, anchors), scale)
            rows = []
            for c in range(scores.shape[-1]):  # as GluonCV's SSD: one (id, score, box) row per anchor and class
                score = scores.slice_axis(axis=-1, begin=c, end=c + 1)
                ids = mx.nd.where(score > decode.score_threshold, mx.nd.ones_like(score) * c, -mx.nd.ones_like(score))
                rows.append(mx.nd.concat(ids, score, boxes, dim=-1))
            result = mx.nd.contrib.box_nms(mx.nd.concat(*rows, dim=1), overlap_thresh=nms["nms_thresh"],
                                           topk=nms["nms_topk"], valid_thresh=decode.score_threshold, id_index=0,
                                           score_index=1, coord_start=2, force_suppress=False)
            result = result.slice_axis(axis=1, begin=0, end=nms["post_nms"])
            return (result.slice_axis(axis=-1, begin=0, end=1), result.slice_axis(axis=-1, begin=1, end=2),
                    result.slice_axis(axis=-1, begin=2, end=6))

        return run


FAMILIES: dict[str, Family] = {f.name: f for f in (SSDFamily(), YOLO3Family(), ClassifierFamily(),
                                                   ExportedDetectionFamily(), MediaPipeSSDFamily())}
