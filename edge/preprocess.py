"""Fit a frame to the model's input as its manifest says, and map boxes back to frame pixels."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgecv.edge.artifact import InputSpec


@dataclass(frozen=True)
class Placement:
    """How a frame was placed in the input: input = frame * scale + pad."""

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float
    frame_width: int
    frame_height: int

    def to_frame(self, boxes: np.ndarray) -> np.ndarray:
        """Boxes (N, 4) in input pixels -> frame pixels, clipped to the frame."""
        out = np.empty_like(boxes, dtype=np.float32)
        out[:, 0::2] = (boxes[:, 0::2] - self.pad_x) / self.scale_x
        out[:, 1::2] = (boxes[:, 1::2] - self.pad_y) / self.scale_y
        np.clip(out[:, 0::2], 0, self.frame_width, out=out[:, 0::2])
        np.clip(out[:, 1::2], 0, self.frame_height, out=out[:, 1::2])
        return out


def preprocess(frame_bgr: np.ndarray, spec: InputSpec, out: np.ndarray | None = None) -> tuple[np.ndarray, Placement]:
    """A BGR uint8 frame (H, W, 3) -> the model's input tensor and where the frame went. ``out``: a float32 array
    of the input's shape to write the tensor into (and return) instead of a new one."""
    import cv2

    if frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3:
        raise ValueError(f"expected a colour frame (H, W, 3), got shape {frame_bgr.shape}")
    if out is not None and (out.shape != spec.shape or out.dtype != np.float32):
        raise ValueError(f"out must be float32 {spec.shape}, got {out.dtype} {out.shape}")
    h, w = frame_bgr.shape[:2]
    th, tw = spec.height, spec.width
    if spec.resize == "stretch":
        sx, sy, px, py = tw / w, th / h, 0.0, 0.0
        canvas = cv2.resize(frame_bgr, (tw, th), interpolation=cv2.INTER_LINEAR)
    else:
        s = min(tw / w, th / h)
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        px, py = (tw - nw) // 2, (th - nh) // 2
        canvas = np.full((th, tw, 3), spec.pad_value, np.uint8)
        canvas[py:py + nh, px:px + nw] = cv2.resize(frame_bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
        sx = sy = s
    return _normalized(canvas, spec, out), Placement(sx, sy, float(px), float(py), w, h)


def _normalized(canvas: np.ndarray, spec: InputSpec, out: np.ndarray | None) -> np.ndarray:
    """(pixel - mean) / std in the model's colour order and layout, written once into the input tensor: each
    channel is converted while it is copied into place, then scaled in place: one pass over the tensor, instead of
    a float copy of the image, a broadcast subtract, a divide and a transposed copy."""
    channels = (2, 1, 0) if spec.color == "RGB" else (0, 1, 2)
    mean = np.asarray(spec.mean, np.float32)
    scale = np.float32(1) / np.asarray(spec.std, np.float32)
    x = np.empty(spec.shape, np.float32) if out is None else out
    if spec.layout == "NCHW":
        for c, source in enumerate(channels):
            x[0, c] = canvas[:, :, source]
        x -= mean[:, None, None]
        x *= scale[:, None, None]
    else:
        x[0] = canvas[:, :, channels]
        x -= mean
        x *= scale
    return x
