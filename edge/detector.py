"""Frame -> ``Detections`` in frame pixels: preprocess as the manifest says, run, decode, NMS, threshold."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgecv.edge.artifact import DecodeSpec
from edgecv.edge.config import DetectConfig
from edgecv.edge.decode import decode_detections
from edgecv.edge.detections import Detections
from edgecv.edge.errors import ArtifactError
from edgecv.edge.preprocess import preprocess
from edgecv.edge.backends import open_backend


class Detector:
    def __init__(self, artifact: Path, config: DetectConfig | None = None, backend: str = "tvm"):
        self.model = open_backend(backend, Path(artifact))
        self.manifest = self.model.manifest
        if self.manifest.task != "detection":
            raise ArtifactError(f"{artifact} is a {self.manifest.task} model, not a detector",
                                "pass a detector artifact to --artifact")
        self.configure(config or DetectConfig())
        self.last_latency = 0.0

    def configure(self, config: DetectConfig) -> None:
        """The artifact's decoding with the user's thresholds (lower scores still enter NMS as in GluonCV)."""
        self.config = config
        self.decode_spec = DecodeSpec(**{**self.manifest.decode.model_dump(), "nms_iou": config.nms_iou,
                                         "max_detections": config.max_detections})

    def __call__(self, image: np.ndarray, frame_id: int = 0, timestamp: float = 0.0, source: str = "") -> Detections:
        start = time.perf_counter()
        x, placement = preprocess(image, self.manifest.input)
        raw = decode_detections(self.model(x), self.decode_spec, frame_id=frame_id, timestamp=timestamp,
                                source=source)
        raw = raw[raw.scores >= min(self.config.score_threshold, 0.1)]  # low ones feed the tracker's 2nd pass
        detections = type(raw)(placement.to_frame(raw.boxes), raw.scores, raw.class_ids, frame_id=frame_id,
                               timestamp=timestamp, source=source)
        self.last_latency = time.perf_counter() - start
        return detections
