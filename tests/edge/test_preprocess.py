"""Preprocessing against the plain formula ((pixel - mean) / std, colour order, layout), on a real picture."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgecv.edge.artifact import InputSpec
from edgecv.edge.preprocess import preprocess

MEAN, STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)


def _reference(canvas_bgr: np.ndarray, spec: InputSpec) -> np.ndarray:
    image = canvas_bgr[:, :, ::-1] if spec.color == "RGB" else canvas_bgr
    x = (image.astype(np.float64) - np.asarray(spec.mean)) / np.asarray(spec.std)
    return (x.transpose(2, 0, 1) if spec.layout == "NCHW" else x)[None]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("color", ["RGB", "BGR"])
def test_stretch_matches_the_formula(opencv_data, layout, color):
    frame = cv2.imread(str(opencv_data / "building.jpg"))
    shape = (1, 3, 96, 128) if layout == "NCHW" else (1, 96, 128, 3)
    spec = InputSpec(name="data", shape=shape, layout=layout, color=color, mean=MEAN, std=STD, resize="stretch")
    x, placement = preprocess(frame, spec)
    canvas = cv2.resize(frame, (128, 96), interpolation=cv2.INTER_LINEAR)
    assert x.dtype == np.float32 and x.shape == shape and x.flags.c_contiguous
    np.testing.assert_allclose(x, _reference(canvas, spec), rtol=0, atol=1e-5)
    assert (placement.scale_x, placement.scale_y) == (128 / frame.shape[1], 96 / frame.shape[0])


def test_letterbox_pads_and_places(opencv_data):
    frame = cv2.imread(str(opencv_data / "building.jpg"))
    h, w = frame.shape[:2]
    spec = InputSpec(name="data", shape=(1, 3, 160, 160), color="RGB", mean=(0, 0, 0), std=(1, 1, 1),
                     resize="letterbox", pad_value=114)
    x, placement = preprocess(frame, spec)
    s = min(160 / w, 160 / h)
    nw, nh = round(w * s), round(h * s)
    px, py = (160 - nw) // 2, (160 - nh) // 2
    assert (placement.pad_x, placement.pad_y) == (px, py) and placement.scale_x == placement.scale_y == s
    pad = x[0, :, :, :px] if px else x[0, :, :py, :]
    assert pad.size and np.all(pad == 114)
    inside = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_LINEAR)[:, :, ::-1].transpose(2, 0, 1)
    np.testing.assert_array_equal(x[0, :, py:py + nh, px:px + nw], inside.astype(np.float32))
    box = np.array([[px + 10, py + 20, px + 50, py + 60]], np.float32)  # input pixels -> frame pixels
    np.testing.assert_allclose(placement.to_frame(box), [[10 / s, 20 / s, 50 / s, 60 / s]], rtol=1e-5)


def test_a_grey_frame_is_refused():
    spec = InputSpec(name="data", shape=(1, 3, 32, 32), color="RGB", mean=MEAN, std=STD, resize="stretch")
    with pytest.raises(ValueError, match="colour frame"):
        preprocess(np.zeros((48, 64), np.uint8), spec)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_written_into_a_given_array(opencv_data, layout):
    """The loop preprocesses into buffers the model reads in place: the same values as a fresh tensor, in the
    array given, whatever it held before."""
    frame = cv2.imread(str(opencv_data / "building.jpg"))
    shape = (1, 3, 96, 128) if layout == "NCHW" else (1, 96, 128, 3)
    spec = InputSpec(name="data", shape=shape, layout=layout, color="RGB", mean=MEAN, std=STD, resize="letterbox")
    fresh, placement = preprocess(frame, spec)
    out = np.full(shape, np.nan, np.float32)
    x, again = preprocess(frame, spec, out)
    assert x is out and again == placement
    np.testing.assert_array_equal(out, fresh)
    with pytest.raises(ValueError, match=r"out must be float32 \(1, \d+, \d+, \d+\), got float32 \(1, 3, 9, 9\)"):
        preprocess(frame, spec, np.zeros((1, 3, 9, 9), np.float32))
