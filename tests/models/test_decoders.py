"""The anchors and decoders the real models use (edge/anchors.py, edge/decode.py), against MediaPipe's semantics."""
from __future__ import annotations

import numpy as np
import pytest

from edgecv.compile.zoo import resolve_model
from edgecv.edge.anchors import center_priors, ssd_anchors
from edgecv.edge.artifact import DecodeSpec, GflOptions, SsdAnchorOptions
from edgecv.edge.decode import decode_detections


def _ssd_options() -> SsdAnchorOptions:
    return DecodeSpec(kind="ssd_anchors", **resolve_model("ssd_300_mobilenetv2_oid").decode).ssd


def test_mediapipe_ssd_anchors():
    anchors = ssd_anchors(_ssd_options())
    # grids ceil(300 / stride): 19, 10, 5, 3, 2, 1; 3 anchors in the reduced lowest layer, then 5 ratios + 1
    assert anchors.shape == (19 * 19 * 3 + (100 + 25 + 9 + 4 + 1) * 6, 4) == (1917, 4)
    first = anchors[:3]
    assert np.allclose(first[:, :2], 0.5 / 19)                       # the first cell's centre
    assert np.allclose(first[0, 2:], [0.1, 0.1])                     # scale 0.1 at ratio 1
    assert np.allclose(first[1, 2:], [0.2 * np.sqrt(2), 0.2 / np.sqrt(2)])  # ratio 2: w = s * sqrt(2)
    last = anchors[-6:]                                              # 1x1 grid, scale 0.95, interpolated sqrt(0.95)
    assert np.allclose(last[:, :2], 0.5)
    assert np.allclose(last[0, 2:], [0.95, 0.95]) and np.allclose(last[-1, 2:], np.sqrt(0.95))
    layer1 = anchors[1083:1089]                                      # stride 32: scale 0.35, next 0.5
    assert np.allclose(layer1[0, 2:], 0.35) and np.allclose(layer1[-1, 2:], np.sqrt(0.35 * 0.5))


def test_ssd_decoder_inverts_the_encoding():
    options = _ssd_options()
    anchors = ssd_anchors(options)
    box = np.array([60.0, 90.0, 150.0, 240.0])                       # x1, y1, x2, y2 in input pixels
    a = anchors[700]
    cx, cy, w, h = (box[0] + box[2]) / 600, (box[1] + box[3]) / 600, (box[2] - box[0]) / 300, (box[3] - box[1]) / 300
    encodings = np.zeros((1, 1917, 4), np.float32)
    encodings[0, 700] = [(cy - a[1]) / a[3] * 10, (cx - a[0]) / a[2] * 10, np.log(h / a[3]) * 5, np.log(w / a[2]) * 5]
    scores = np.zeros((1, 1917, 23), np.float32)
    scores[0, 700, 3] = 0.9
    found = decode_detections({"box_encodings": encodings, "scores": scores},
                              DecodeSpec(kind="ssd_anchors", ssd=options))
    assert len(found) == 1 and found.class_ids[0] == 3 and np.allclose(found.boxes[0], box, atol=1e-3)


def test_gfl_decoder_takes_the_expected_distance():
    options = GflOptions(input_size=(32, 32), strides=(8, 16), reg_max=3, center_offset=0.5)
    priors = center_priors(options.input_size, options.strides, options.center_offset)
    assert priors.shape == (16 + 4, 3) and np.allclose(priors[0], [4, 4, 8]) and np.allclose(priors[16], [8, 8, 16])
    scores = np.zeros((1, 20, 2), np.float32)
    scores[0, 5, 1] = 0.8                                             # prior (12, 12), stride 8
    logits = np.full((1, 20, 16), -30.0, np.float32)
    logits[0, 5].reshape(4, 4)[:] = -30.0
    bins = logits[0, 5].reshape(4, 4)
    bins[0, 1] = bins[1, 2] = bins[2, 0] = 10.0                       # left 1, top 2, right 0 bins
    bins[3, 1] = bins[3, 2] = 10.0                                    # bottom: half 1, half 2 -> 1.5
    logits[0, 5] = bins.reshape(-1)
    found = decode_detections({"scores": scores, "box_distribution": logits}, DecodeSpec(kind="gfl", gfl=options))
    assert len(found) == 1 and found.class_ids[0] == 1
    assert np.allclose(found.boxes[0], [12 - 8, 12 - 16, 12 + 0, 12 + 12], atol=1e-3)


@pytest.mark.parametrize("kind", ["ssd_anchors", "gfl"])
def test_decode_kinds_need_their_options(kind):
    with pytest.raises(ValueError, match="required"):
        DecodeSpec(kind=kind)
    with pytest.raises(ValueError, match="only for it"):
        DecodeSpec(kind="boxes_scores", ssd=_ssd_options())
