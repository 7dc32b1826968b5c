"""Crop classification: a second artifact names the sub-type of goods (a bottle's brand, a product).

Each goods track is classified once, when it is first confirmed, and again every ``refresh`` frames;
the label follows the track id, so a frame costs at most a few crops, not one per detection.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecv.edge.decode import top_classes
from edgecv.edge.detections import Detections
from edgecv.edge.errors import ArtifactError
from edgecv.edge.preprocess import preprocess
from edgecv.edge.runtime import TvmModel


class CropClassifier:
    def __init__(self, artifact: Path, refresh: int = 50, min_score: float = 0.0, max_per_frame: int = 4):
        self.model = TvmModel(Path(artifact))
        if self.model.manifest.task != "classification":
            raise ArtifactError(f"{artifact} is a {self.model.manifest.task} model, not a classifier",
                                "pass a classifier artifact (e.g. mobilenetv2_1.0) to --classifier")
        self.classes = self.model.manifest.classes
        self.refresh, self.min_score, self.max_per_frame = refresh, min_score, max_per_frame
        self._labels: dict[int, tuple[str, int]] = {}  # track id -> (label, frame classified)

    def label(self, image: np.ndarray, box: np.ndarray) -> str | None:
        h, w = image.shape[:2]
        x1, y1, x2, y2 = np.clip(box, 0, [w, h, w, h]).astype(int)
        if x2 - x1 < 4 or y2 - y1 < 4:
            return None
        x, _ = preprocess(np.ascontiguousarray(image[y1:y2, x1:x2]), self.model.manifest.input)
        ids, probs = top_classes(self.model(x)[self.model.manifest.outputs[0].name], k=1)
        return self.classes[int(ids[0])] if probs[0] >= self.min_score else None

    def update(self, image: np.ndarray, tracked: Detections, mask: np.ndarray, frame: int) -> dict[int, str]:
        """Labels of the masked (goods) tracks in this frame, classifying the stalest few."""
        ids = tracked.track_ids if tracked.track_ids is not None else np.zeros(0, np.int64)
        due = [i for i in np.flatnonzero(mask)
               if ids[i] not in self._labels or frame - self._labels[ids[i]][1] >= self.refresh]
        for i in due[: self.max_per_frame]:
            label = self.label(image, tracked.boxes[i])
            if label is not None:
                self._labels[int(ids[i])] = (label, frame)
        if len(self._labels) > 10_000:  # bounded: forget the oldest
            for tid in sorted(self._labels, key=lambda t: self._labels[t][1])[:5_000]:
                del self._labels[tid]
        return {int(ids[i]): self._labels[ids[i]][0] for i in np.flatnonzero(mask) if ids[i] in self._labels}
