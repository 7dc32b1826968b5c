"""Frame -> ``Detections`` in frame pixels: preprocess as the manifest says, run, decode, NMS, threshold."""
from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np

from edgecv.edge.config import DetectConfig, TrackerConfig
from edgecv.edge.decode import decode_detections
from edgecv.edge.detections import Detections
from edgecv.edge.errors import ArtifactError
from edgecv.edge.preprocess import Placement, preprocess
from edgecv.edge.backends import open_backend


def below(score: float) -> float:
    """The largest float32 under ``score``: decoders keep scores ``> threshold``, this keeps ``>= score``."""
    return float(np.nextafter(np.float32(score), np.float32(0)))


class Detector:
    def __init__(self, artifact: Path, config: DetectConfig | None = None, backend: str = "tvm"):
        self.model = open_backend(backend, Path(artifact))
        self.manifest = self.model.manifest
        if self.manifest.task != "detection":
            raise ArtifactError(f"{artifact} is a {self.manifest.task} model, not a detector",
                                "pass a detector artifact to --artifact")
        self._replicas: list[Detector] = []
        self._streams: dict = {}  # count -> DetectionStreams
        self.configure(config or DetectConfig())
        self.last_latency = 0.0
        self._input: np.ndarray | None = None  # where frames not prepared ahead are preprocessed

    def configure(self, config: DetectConfig, low_score: float = TrackerConfig().low_score) -> None:
        """The artifact's decoding with the user's thresholds. Detections from ``low_score`` up are kept (the
        tracker's second pass matches those under ``score_threshold``). Candidates below that are dropped before
        NMS instead of after: NMS only lets a box suppress lower-scored ones, so the boxes kept are the same,
        and NMS works through tens of candidates instead of hundreds."""
        self.config = config
        self.kept_from = min(config.score_threshold, low_score)
        decode = self.manifest.decode
        self.decode_spec = decode.replace(nms_iou=config.nms_iou, max_detections=config.max_detections,
                                          score_threshold=max(decode.score_threshold, below(self.kept_from)))
        for twin in self._replicas:
            twin.configure(config, low_score)

    def replicas(self, count: int) -> list[Detector]:
        """``count`` detectors for parallel streams: this one and twins, each with its own model instance (the same
        weights), configured as this one is (now and on every ``configure``); made once, kept for its life."""
        while len(self._replicas) < count - 1:
            twin = copy.copy(self)
            twin.model, twin._input, twin.last_latency = self.model.replica(), None, 0.0
            twin._replicas, twin._streams = [], {}
            self._replicas.append(twin)
        return [self, *self._replicas[:count - 1]]

    def streams(self, count: int):
        """``count`` parallel detection streams over this detector and its replicas (``DetectionStreams``), made
        once per count and kept for the detector's life."""
        if count not in self._streams:
            from edgecv.edge.streams import DetectionStreams

            self._streams[count] = DetectionStreams(self, count)
        return self._streams[count]

    def input_buffer(self) -> np.ndarray:
        """An array to ``prepare`` frames into, which the model reads without copying it."""
        return self.model.input_buffer()

    def prepare(self, image: np.ndarray, out: np.ndarray | None = None) -> tuple[np.ndarray, Placement]:
        """The model's input for a BGR frame (written into ``out`` if given), and where the frame went in it
        (may run in another thread)."""
        return preprocess(image, self.manifest.input, out)

    def __call__(self, image: np.ndarray, frame_id: int = 0, timestamp: float = 0.0, source: str = "",
                 prepared: tuple[np.ndarray, Placement] | None = None) -> Detections:
        """Detections in frame pixels; ``prepared``: ``prepare(image)`` done ahead (``last_latency`` then
        counts from the model input on)."""
        start = time.perf_counter()
        if prepared is None:
            if self._input is None:
                self._input = self.input_buffer()
            prepared = self.prepare(image, self._input)
        x, placement = prepared
        # (the decoding threshold is just under ``kept_from``: every detection decoded is kept; those under the
        # user's threshold feed the tracker's second pass)
        detections = decode_detections(self.model(x), self.decode_spec, placement.to_frame, frame_id=frame_id,
                                       timestamp=timestamp, source=source)
        self.last_latency = time.perf_counter() - start
        return detections
