"""Draw what the counter sees: boxes with class, score and track id, the door line, zones, counts."""
from __future__ import annotations

import numpy as np

from edgecv.edge.config import CountingConfig
from edgecv.edge.counting import Counts, GroupMap
from edgecv.edge.detections import Detections

_COLOURS = {"people": (60, 200, 60), "goods": (0, 165, 255), "ignore": (160, 160, 160)}


def annotate(image: np.ndarray, detections: Detections, groups: GroupMap, counting: CountingConfig,
             counts: Counts | None) -> np.ndarray:
    import cv2

    out = image.copy()
    h, w = out.shape[:2]
    for zone in counting.zones:
        poly = (np.asarray(zone.polygon) * (w, h)).astype(np.int32)
        cv2.polylines(out, [poly], True, (255, 128, 0), 2)
        label = f"{zone.name}: {counts.zones.get(zone.name, 0) if counts else 0}"
        cv2.putText(out, label, tuple(int(v) for v in poly[0]), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 128, 0), 1)
    if counting.line:
        a, b = ((int(x * w), int(y * h)) for x, y in counting.line.points)
        cv2.line(out, a, b, (0, 0, 255), 2)
        cv2.putText(out, f"{counting.line.name} ({counting.line.in_side} = in)", a, cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (0, 0, 255), 1)
    group_names = groups.groups(detections.class_ids)
    for i in range(len(detections)):
        x1, y1, x2, y2 = (int(v) for v in detections.boxes[i])
        colour = _COLOURS[group_names[i]]
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, 2)
        tid = f" #{int(detections.track_ids[i])}" if detections.track_ids is not None else ""
        label = f"{groups.name(int(detections.class_ids[i]))} {detections.scores[i]:.2f}{tid}"
        cv2.putText(out, label, (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1)
    if counts is not None:
        text = f"people {counts.people}  goods {counts.goods}  in {counts.people_in}  out {counts.people_out}"
        cv2.rectangle(out, (0, 0), (min(w, 12 + 9 * len(text)), 24), (0, 0, 0), -1)
        cv2.putText(out, text, (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1)
    return out


class VideoWriter:
    """Writes frames to a video file (opened on the first frame, at its size)."""

    def __init__(self, path: str, fps: float = 15.0):
        self.path, self.fps, self._writer = path, fps, None

    def write(self, frame: np.ndarray) -> None:
        import cv2

        if self._writer is None:
            fourcc = cv2.VideoWriter_fourcc(*("mp4v" if self.path.endswith(".mp4") else "MJPG"))
            writer = cv2.VideoWriter(self.path, fourcc, self.fps, (frame.shape[1], frame.shape[0]))
            if not writer.isOpened():  # (tried again on the next frame: each frame not written is a failure)
                raise OSError(f"can't write video {self.path}")
            self._writer = writer
        self._writer.write(frame)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
