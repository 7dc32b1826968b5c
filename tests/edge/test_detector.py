"""The detector drops candidates below the lowest score it keeps before NMS: the same detections as NMS over
every candidate above the model's own threshold followed by the cut, on a real artifact and real video."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgecv.edge.config import DetectConfig
from edgecv.edge.decode import DETECTION_DECODERS, decode_detections
from edgecv.edge.detector import Detector, below
from edgecv.edge.preprocess import preprocess


def test_below_keeps_the_score_itself():
    scores = np.array([0.1, np.nextafter(np.float32(0.1), np.float32(0))], np.float32)
    assert list(scores > below(0.1)) == [True, False]


@pytest.mark.slow
@pytest.mark.parametrize("score_threshold, low_score", [(0.5, 0.1), (0.05, 0.1), (0.5, 0.03), (0.6, 0.3)])
def test_early_cut_keeps_the_same_detections(detector_artifact, opencv_data, score_threshold, low_score):
    config = DetectConfig(score_threshold=score_threshold)
    detector = Detector(detector_artifact, config)
    detector.configure(config, low_score)
    kept_from = min(score_threshold, low_score)
    model_spec = detector.decode_spec.replace(score_threshold=detector.manifest.decode.score_threshold)
    assert detector.decode_spec.score_threshold > model_spec.score_threshold
    cap = cv2.VideoCapture(str(opencv_data / "vtest.avi"))
    cut_before_nms = 0
    for index in range(8):
        ok, frame = cap.read()
        assert ok
        x, placement = preprocess(frame, detector.manifest.input)
        outputs = detector.model(x)
        everything = decode_detections(outputs, model_spec)
        expected = everything[everything.scores >= kept_from]
        got = detector(frame, index)
        np.testing.assert_array_equal(got.scores, expected.scores)
        np.testing.assert_array_equal(got.class_ids, expected.class_ids)
        np.testing.assert_allclose(got.boxes, placement.to_frame(expected.boxes), rtol=0, atol=1e-4)
        candidates = [len(DETECTION_DECODERS[spec.kind](outputs, spec)[1]) for spec in (model_spec, detector.decode_spec)]
        cut_before_nms += candidates[0] - candidates[1]
    assert cut_before_nms > 0, "no candidate fell under the cut: the comparison showed nothing"


def test_the_model_reads_its_input_buffers_in_place(detector_artifact, opencv_data):
    """A frame preprocessed into ``input_buffer()`` gives the outputs of the same frame passed as a plain array
    (copied in), also after the buffer is rewritten with another frame and back; a dropped buffer is forgotten."""
    detector = Detector(detector_artifact)
    model = detector.model
    frames = [cv2.imread(str(opencv_data / name)) for name in ("basketball1.png", "building.jpg")]
    expected = [model(detector.prepare(frame)[0]) for frame in frames]
    buffer = detector.input_buffer()
    for frame, want in [*zip(frames, expected), (frames[0], expected[0])]:
        x, _ = detector.prepare(frame, buffer)
        got = model(x)
        assert x is buffer and all(np.array_equal(got[name], want[name]) for name in want)
    assert not all(np.array_equal(expected[0][name], expected[1][name]) for name in expected[0])  # two pictures
    assert len(model._buffers) == 1
    del buffer, x
    assert len(model._buffers) == 0
