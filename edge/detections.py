"""``Detections``: the one record that flows between the edge loop's stages."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


@dataclass(frozen=True)
class Detections:
    """Detections of one frame, as parallel numpy arrays.

    ``boxes`` are (N, 4) x1, y1, x2, y2 in frame pixels; ``track_ids`` are set by the tracker.
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    track_ids: np.ndarray | None = None
    frame_id: int = 0
    timestamp: float = 0.0
    source: str = ""
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        n = len(self.scores)
        checks = [(self.boxes, (n, 4), "boxes"), (self.scores, (n,), "scores"), (self.class_ids, (n,), "class_ids")]
        if self.track_ids is not None:
            checks.append((self.track_ids, (n,), "track_ids"))
        for array, shape, name in checks:
            if not isinstance(array, np.ndarray) or array.shape != shape:
                got = getattr(array, "shape", type(array).__name__)
                raise ValueError(f"Detections.{name} must be an array of shape {shape}, got {got}")

    @classmethod
    def empty(cls, **kwargs) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), **kwargs)

    def __len__(self) -> int:
        return len(self.scores)

    def __getitem__(self, index) -> "Detections":
        """Select by a boolean mask, an index array or a slice; frame fields are kept."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return replace(self, boxes=self.boxes[index], scores=self.scores[index], class_ids=self.class_ids[index],
                       track_ids=None if self.track_ids is None else self.track_ids[index])

    def with_tracks(self, track_ids: np.ndarray) -> "Detections":
        return replace(self, track_ids=np.asarray(track_ids, np.int64))
