"""Prove "no loss in accuracy": run the compiled artifact and the MXNet model on the same real images.

Two comparisons per image: the raw outputs (largest absolute difference, against float tolerance),
and the final detections — GluonCV's own decoding + NMS on the MXNet side, the edge runtime's numpy
decoder on the compiled side — matched by class and IoU. Detections whose presence hinges on float
noise (a score within ``score_tol`` of the threshold or of the last kept score) are reported as
borderline, not as differences.
"""
from __future__ import annotations

import glob
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgecv.edge.decode import decode_detections, top_classes
from edgecv.edge.detections import Detections
from edgecv.edge.errors import VerificationError
from edgecv.edge.matching import match
from edgecv.edge.preprocess import preprocess

SAMPLE_DIRS = ("/usr/share/doc/opencv-doc/examples/data",)
SAMPLE_IMAGES = ("basketball1.png", "messi5.jpg", "fruits.jpg", "baboon.jpg")
RTOL, ATOL = 1e-3, 1e-3   # of the largest reference magnitude per output (float32 reordering noise)
SCORE_TOL = 1e-3
BOX_TOL = 1e-2            # pixels: degenerate (near zero-area) boxes have no IoU to match by, only coordinates


@dataclass
class ImageReport:
    image: str
    task: str
    max_abs_diff: dict[str, float]
    max_abs_ref: dict[str, float]
    reference: int = 0
    compiled: int = 0
    matched: int = 0
    differing: int = 0
    borderline: int = 0
    ok: bool = True


@dataclass
class VerifyReport:
    images: list[ImageReport] = field(default_factory=list)
    source: str = "mxnet"  # what the artifact was compared with
    exact: bool = True  # False for int8: differences beyond float tolerance are expected, shown as "diff", not "FAIL"

    @property
    def ok(self) -> bool:
        return bool(self.images) and all(r.ok for r in self.images)

    @property
    def max_abs_diff(self) -> float:
        return max((v for r in self.images for v in r.max_abs_diff.values()), default=0.0)

    def summary(self) -> str:
        lines = []
        for r in self.images:
            diffs = ", ".join(f"{k} {v:.2e} (of {r.max_abs_ref[k]:.3g})" for k, v in r.max_abs_diff.items())
            what = (f"detections {self.source} {r.reference} / compiled {r.compiled}, matched {r.matched}, "
                    f"differing {r.differing}, borderline {r.borderline}") if r.task == "detection" else (
                    f"top-{r.reference} classes, same {r.matched}, differing {r.differing}")
            verdict = "ok  " if r.ok else "FAIL" if self.exact else "diff"
            lines.append(f"{verdict} {Path(r.image).name}: max |diff| {diffs}; {what}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "max_abs_diff": self.max_abs_diff, "images": [asdict(r) for r in self.images]}


def default_images() -> list[Path]:
    for folder in SAMPLE_DIRS:
        found = [Path(folder) / name for name in SAMPLE_IMAGES if (Path(folder) / name).is_file()]
        if found:
            return found
    return []


def read_images(patterns: list[str] | None) -> list[tuple[str, np.ndarray]]:
    import cv2

    paths = [Path(p) for pat in patterns for p in sorted(glob.glob(pat))] if patterns else default_images()
    if not paths:
        raise VerificationError("no images to verify with", "apt-get install opencv-doc, or pass --verify-images FILE...")
    images = []
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise VerificationError(f"can't read image {path}", "pass readable JPEG/PNG files to --verify-images")
        images.append((str(path), image))
    return images


def _borderline(d: Detections, index: np.ndarray, other: Detections, spec) -> np.ndarray:
    scores = d.scores[index]
    near = scores <= spec.score_threshold + SCORE_TOL
    if len(other) >= spec.max_detections:
        near |= scores <= other.scores.min() + SCORE_TOL
    return near


def _same_boxes(ref: Detections, got: Detections, m) -> np.ndarray:
    """Unmatched pairs that are the same detection by class, score and coordinates (IoU can't tell for boxes of
    almost no area): (K, 2) indices."""
    pairs, taken = [], set()
    for i in m.unmatched_a:
        for j in m.unmatched_b:
            if j not in taken and ref.class_ids[i] == got.class_ids[j] and \
                    abs(ref.scores[i] - got.scores[j]) <= SCORE_TOL and np.abs(ref.boxes[i] - got.boxes[j]).max() <= BOX_TOL:
                pairs.append((i, j))
                taken.add(j)
                break
    return np.asarray(pairs, np.int64).reshape(-1, 2)


def compare_detections(report: ImageReport, ref: Detections, got: Detections, spec) -> None:
    m = match(ref, got, iou_threshold=0.5)
    same = _same_boxes(ref, got, m)
    if len(same):
        m = type(m)(np.concatenate([m.pairs, same]), np.setdiff1d(m.unmatched_a, same[:, 0]),
                    np.setdiff1d(m.unmatched_b, same[:, 1]))
    border = int(_borderline(ref, m.unmatched_a, got, spec).sum() + _borderline(got, m.unmatched_b, ref, spec).sum())
    report.reference, report.compiled, report.matched = len(ref), len(got), len(m.pairs)
    if border > max(2, len(ref) // 20):  # many "borderline" ones mean saturated scores, not float noise
        border = 0
    report.borderline = border
    report.differing = len(m.unmatched_a) + len(m.unmatched_b) - border
    if len(m.pairs):
        gap = np.abs(ref.scores[m.pairs[:, 0]] - got.scores[m.pairs[:, 1]])
        report.differing += int(np.sum(gap > SCORE_TOL))


def verify(model, compiled, images: list[tuple[str, np.ndarray]]) -> VerifyReport:
    """``model``: the compile step's ``SourceModel``; ``compiled``: an ``edge.runtime.TvmModel``."""
    manifest = compiled.manifest
    report = VerifyReport(source=getattr(model, "reference_name", "MXNet").lower().replace(" ", ""))
    for name, image in images:
        x, _ = preprocess(image, manifest.input)
        ref_raw, got_raw = model.raw(x), compiled(x)
        r = ImageReport(name, manifest.task, {}, {})
        for key, ref in ref_raw.items():
            got = got_raw[key]
            scale = float(np.abs(ref).max())
            r.max_abs_diff[key] = float(np.abs(got - ref).max())
            r.max_abs_ref[key] = scale
            if not (np.all(np.isfinite(got)) and r.max_abs_diff[key] <= ATOL + RTOL * scale):
                r.ok = False
        if manifest.task == "detection":
            compare_detections(r, model.detections(x), decode_detections(got_raw, manifest.decode), manifest.decode)
        else:
            ref_ids, _ = top_classes(ref_raw["probabilities"])
            got_ids, _ = top_classes(got_raw["probabilities"])
            r.reference = r.compiled = len(ref_ids)
            r.matched = int(np.sum(ref_ids == got_ids))
            r.differing = len(ref_ids) - r.matched
        r.ok = r.ok and r.differing == 0
        report.images.append(r)
    return report
