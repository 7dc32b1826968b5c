"""``edgecv eval``: precision and recall at IoU 0.5 on the project's labelled set, per model and backend.

The set (``models/eval/labels.json``) labels *groups* -- people and goods -- not classes, so models with different
class lists (Open Images, COCO, VOC) are scored alike: each detection counts as its class's group (the model's
class map, ``models/classes``). Boxes marked ``difficult`` (tiny, mostly hidden) neither count as misses nor make a
detection on them a false positive (as Pascal VOC does).

Backends: ``tvm`` (the compiled artifact), ``onnxruntime`` (the same graph uncompiled) and ``mxnet`` (for a model
name: the MXNet source model with GluonCV's own decoding and NMS; for an artifact: its kept MXNet graph). All of
them see the same preprocessed input; the compiled and the source model must score the same.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgecv.edge.counting import GroupMap
from edgecv.edge.errors import EdgecvError
from edgecv.edge.nms import box_iou

LABELS = Path(__file__).resolve().parent.parent / "models" / "eval" / "labels.json"
SCHEMA = "edgecv.labels/1"
GROUPS = ("people", "goods")
OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
BACKENDS = ("mxnet", "onnxruntime", "tvm")


# --- the labelled set -----------------------------------------------------------------------------------------

def image_path(ref: str, labels_file: Path = LABELS) -> tuple[Path, int | None]:
    """``opencv-doc:NAME`` (Debian's opencv-doc samples), ``eval:NAME`` (models/eval/images), ``...avi#N`` (frame N)."""
    ref, _, frame = ref.partition("#")
    where, _, name = ref.partition(":")
    folders = {"opencv-doc": OPENCV_DATA, "eval": LABELS.parent / "images"}  # the project's own pictures
    if where not in folders:
        raise EdgecvError(f"unknown image location {ref!r} in {labels_file}", "use opencv-doc:NAME or eval:NAME")
    return folders[where] / name, int(frame) if frame else None


def read_image(ref: str, labels_file: Path = LABELS) -> np.ndarray:
    import cv2

    path, frame = image_path(ref, labels_file)
    if not path.is_file():
        raise EdgecvError(f"image {path} of the labelled set is missing",
                          "apt-get install opencv-doc" if "opencv-doc" in ref else "restore models/eval/images")
    if frame is None:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    else:
        capture = cv2.VideoCapture(str(path))
        capture.set(cv2.CAP_PROP_POS_FRAMES, frame)
        ok, image = capture.read()
        capture.release()
        image = image if ok else None
    if image is None:
        raise EdgecvError(f"can't read {ref} ({path})", "check the file")
    return image


@dataclass(frozen=True)
class Truth:
    image: str
    boxes: np.ndarray       # (N, 4) frame pixels
    groups: np.ndarray      # (N,) "people" | "goods"
    difficult: np.ndarray   # (N,) bool


def load_labels(path: Path = LABELS) -> list[Truth]:
    data = json.loads(Path(path).read_text())
    if data.get("schema") != SCHEMA:
        raise EdgecvError(f"{path} is not an {SCHEMA} file", "pass models/eval/labels.json or a file like it")
    out = []
    for item in data["images"]:
        objects = item["objects"]
        bad = [o for o in objects if o["group"] not in GROUPS or len(o["box"]) != 4]
        if bad:
            raise EdgecvError(f"{path}: {item['image']}: bad objects {bad}", f"groups are {GROUPS}, boxes x1,y1,x2,y2")
        out.append(Truth(item["image"], np.asarray([o["box"] for o in objects], np.float32).reshape(-1, 4),
                         np.asarray([o["group"] for o in objects], object),
                         np.asarray([bool(o.get("difficult", False)) for o in objects], bool)))
    return out


# --- scoring --------------------------------------------------------------------------------------------------

@dataclass
class GroupScore:
    true_positives: int = 0
    false_positives: int = 0
    labelled: int = 0          # boxes that count (not difficult)

    @property
    def precision(self) -> float:
        found = self.true_positives + self.false_positives
        return self.true_positives / found if found else 1.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.labelled if self.labelled else 1.0


@dataclass
class BackendScore:
    backend: str
    status: str = "ok"
    reason: str = ""
    groups: dict[str, GroupScore] = field(default_factory=lambda: {g: GroupScore() for g in GROUPS})
    per_image: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"backend": self.backend, "status": self.status, "reason": self.reason,
                "groups": {g: {"precision": round(s.precision, 4), "recall": round(s.recall, 4),
                               "true_positives": s.true_positives, "false_positives": s.false_positives,
                               "labelled": s.labelled} for g, s in self.groups.items()},
                "images": self.per_image}


def score_image(truth: Truth, boxes: np.ndarray, groups: np.ndarray, scores: np.ndarray,
                iou_threshold: float = 0.5) -> dict[str, tuple[int, int, int]]:
    """Per group: (true positives, false positives, labelled). Greedy by score, as VOC: a detection takes the
    best-overlapping unclaimed box of its group; one on a difficult box is ignored."""
    out = {}
    for group in GROUPS:
        mine = np.flatnonzero(groups == group)
        mine = mine[np.argsort(-scores[mine], kind="stable")]
        gt = np.flatnonzero(truth.groups == group)
        iou = box_iou(boxes[mine], truth.boxes[gt]) if len(mine) and len(gt) else np.zeros((len(mine), len(gt)))
        claimed = np.zeros(len(gt), bool)
        tp = fp = 0
        for row in range(len(mine)):
            candidates = np.where(claimed, -1.0, iou[row])
            j = int(np.argmax(candidates)) if len(gt) else -1
            if j >= 0 and candidates[j] >= iou_threshold:
                claimed[j] = True
                if not truth.difficult[gt[j]]:
                    tp += 1
            elif not (len(gt) and np.any(iou[row][truth.difficult[gt]] >= iou_threshold)):
                fp += 1
        out[group] = (tp, fp, int(np.sum(~truth.difficult[gt])))
    return out


# --- backends ---------------------------------------------------------------------------------------------------

def _backend_runner(name: str, artifact: Path, source_model):
    """x -> Detections (input pixels) for one backend, or raise EdgecvError saying why it can't run."""
    from edgecv.edge.backends import open_backend
    from edgecv.edge.decode import decode_detections

    if name == "mxnet" and source_model is not None:
        if not hasattr(source_model, "raw_symbols"):
            raise EdgecvError("there is no MXNet source for this model (it is compiled from ONNX)",
                              "compare onnxruntime with tvm")
        return source_model.detections  # GluonCV's own decoding and NMS
    model = open_backend(name, artifact)
    return lambda x: decode_detections(model(x), model.manifest.decode)


def evaluate(artifact: Path, backends: list[str], score_threshold: float, labels: Path = LABELS,
             source_model=None, log=lambda m: None) -> dict:
    from edgecv.edge.artifact import load_manifest
    from edgecv.edge.preprocess import preprocess

    manifest = load_manifest(artifact)
    if manifest.task != "detection":
        raise EdgecvError(f"{artifact} is a {manifest.task} model", "edgecv eval scores detectors")
    group_map = GroupMap(manifest.classes, manifest.groups)
    truths = load_labels(labels)
    results = []
    inputs = [(t, *preprocess(read_image(t.image, labels), manifest.input)) for t in truths]
    for name in backends:
        result = BackendScore(name)
        try:
            run = _backend_runner(name, artifact, source_model)
        except EdgecvError as exc:
            result.status, result.reason = "skipped", str(exc)
            results.append(result)
            continue
        log(f"{name}: {len(inputs)} images")
        for truth, x, placement in inputs:
            found = run(x)
            found = found[found.scores >= score_threshold]
            boxes = placement.to_frame(found.boxes)
            counts = score_image(truth, boxes, group_map.groups(found.class_ids), found.scores)
            for group, (tp, fp, n) in counts.items():
                s = result.groups[group]
                s.true_positives, s.false_positives, s.labelled = s.true_positives + tp, s.false_positives + fp, \
                    s.labelled + n
            result.per_image.append({"image": truth.image, **{g: list(v) for g, v in counts.items()}})
        results.append(result)
    return {"model": manifest.model, "target": manifest.target.name, "labels": str(labels), "images": len(truths),
            "iou": 0.5, "score_threshold": score_threshold, "results": [r.to_dict() for r in results]}


def summary(report: dict) -> str:
    lines = [f"{report['model']} on {report['images']} labelled images (IoU 0.5, score >= {report['score_threshold']}):"]
    for r in report["results"]:
        if r["status"] != "ok":
            lines.append(f"  {r['backend']:12} skipped: {r['reason']}")
            continue
        parts = [f"{g} P {s['precision']:.3f} R {s['recall']:.3f} (TP {s['true_positives']}, FP {s['false_positives']}, "
                 f"labelled {s['labelled']})" for g, s in r["groups"].items()]
        lines.append(f"  {r['backend']:12} " + "; ".join(parts))
    return "\n".join(lines)


def same_scores(report: dict) -> bool:
    """Every backend that ran found the same true and false positives."""
    ran = [r["groups"] for r in report["results"] if r["status"] == "ok"]
    return all(g == ran[0] for g in ran)


def evaluate_model(model_or_artifact: str, backends: list[str], score_threshold: float, target: str = "x86_64",
                   labels: Path = LABELS, progress=None) -> dict:
    """An artifact folder, or a model (zoo name, checkpoint, ONNX with its decoder) compiled here first."""
    import tempfile

    from edgecv.compile.pipeline import CompileRequest, compile_model, load_model, _shipped_weights
    from edgecv.compile.progress import Progress
    from edgecv.compile.weights import Weights
    from edgecv.compile.zoo import resolve_model
    from edgecv.edge.artifact import MANIFEST

    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise EdgecvError(f"unknown backends {unknown}", f"use some of {','.join(BACKENDS)}")
    progress = progress or Progress(0)
    path = Path(model_or_artifact)
    if (path / MANIFEST).is_file():
        return evaluate(path, backends, score_threshold, labels, log=progress.log)
    spec = resolve_model(model_or_artifact)
    if not spec.brings_weights:
        raise EdgecvError(f"{spec.name} has no shipped weights to evaluate",
                          "evaluate a model with real weights (see `edgecv models`) or an artifact folder")
    with tempfile.TemporaryDirectory(prefix="edgecv-eval-") as tmp:
        request = CompileRequest(model=model_or_artifact, target=target, out=Path(tmp) / "artifact",
                                 weights=Weights(), keep_reference=True)
        compile_model(request, progress)
        source = load_model(spec, _shipped_weights(spec, request)) if "mxnet" in backends else None
        return evaluate(Path(tmp) / "artifact", backends, score_threshold, labels, source, progress.log)
