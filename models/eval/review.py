"""Make and check the labelled set by eye (how models/eval/labels.json was made).

    python models/eval/review.py candidates ARTIFACT... > draft.json   # boxes the real models find, merged
    python models/eval/review.py draw [labels.json] [--out DIR]          # every image with its numbered boxes

Candidates are only a start: each image is then looked at with its boxes drawn, boxes are corrected, added or
removed by hand, and tiny or mostly hidden people are marked ``difficult``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from edgecv.compile.evaluate import LABELS, SCHEMA, load_labels, read_image
from edgecv.edge.nms import box_iou

VTEST_FRAMES = tuple(range(0, 720, 30))
PHOTOS = ("opencv-doc:messi5.jpg", "opencv-doc:basketball1.png", "opencv-doc:left.jpg", "opencv-doc:right02.jpg",
          "eval:person.jpg", "eval:dog.jpg", "eval:horses.jpg")
THRESHOLDS = {"mediapipe_ssd": 0.4, "nanodet": 0.5}


def candidates(artifacts: list[str]) -> dict:
    from edgecv.edge.config import DetectConfig
    from edgecv.edge.counting import GroupMap
    from edgecv.edge.detector import Detector

    detectors = []
    for artifact in artifacts:
        detector = Detector(artifact, DetectConfig(score_threshold=0.3), backend="onnxruntime")
        detectors.append((detector, GroupMap(detector.manifest.classes, detector.manifest.groups)))
    images = [f"opencv-doc:vtest.avi#{f}" for f in VTEST_FRAMES] + list(PHOTOS)
    out = []
    for ref in images:
        image = read_image(ref)
        boxes, groups, scores = [], [], []
        for detector, group_map in detectors:
            found = detector(image)
            found = found[found.scores >= 0.4]
            for box, group, score in zip(found.boxes, group_map.groups(found.class_ids), found.scores):
                if group != "ignore":
                    boxes.append(box), groups.append(group), scores.append(score)
        keep = []
        for i in np.argsort(-np.asarray(scores)):
            if all(groups[i] != groups[j] or box_iou(boxes[i][None], boxes[j][None])[0, 0] < 0.5 for j in keep):
                keep.append(int(i))
        out.append({"image": ref, "objects": [{"group": groups[i], "box": [round(float(v)) for v in boxes[i]]}
                                              for i in keep]})
    return {"schema": SCHEMA, "images": out}


def draw(labels: Path, out: Path) -> None:
    import cv2

    out.mkdir(parents=True, exist_ok=True)
    colours = {"people": (0, 200, 0), "goods": (0, 140, 255)}
    for n, truth in enumerate(load_labels(labels)):
        image = read_image(truth.image, labels)
        for i, (box, group, hard) in enumerate(zip(truth.boxes.astype(int), truth.groups, truth.difficult)):
            colour = (160, 160, 160) if hard else colours[group]
            cv2.rectangle(image, tuple(box[:2]), tuple(box[2:]), colour, 2)
            cv2.putText(image, str(i), (box[0] + 2, box[1] + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 2)
        cv2.putText(image, truth.image, (5, image.shape[0] - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 2)
        cv2.imwrite(str(out / f"{n:02d}.png"), image)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("candidates")
    c.add_argument("artifacts", nargs="+", help="artifacts compiled with --keep-reference")
    d = sub.add_parser("draw")
    d.add_argument("labels", nargs="?", type=Path, default=LABELS)
    d.add_argument("--out", type=Path, default=Path("build/eval-review"))
    args = parser.parse_args(argv)
    if args.command == "candidates":
        json.dump(candidates(args.artifacts), sys.stdout, indent=1)
    else:
        draw(args.labels, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
