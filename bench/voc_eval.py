"""Time evaluate_voc on a generated set the size of VOC 2007 test.

4952 images, about 15k ground-truth boxes over 20 classes (about 20% difficult),
100 detections per image (495,200 in all): a third are jittered copies of
ground-truth boxes (so there are true positives, duplicates and near misses),
the rest random boxes. Fixed seed; prints the median of several runs.

    .venv/bin/python -m bench.voc_eval [--runs 5] [--metric voc07|voc12]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from detector.evaluation.voc_ap import evaluate_voc
from detector.records import Detections, ImageRecord

# Sizes of PASCAL VOC 2007 test: 4952 images, 14,976 objects (incl. difficult).
N_IMAGES = 4952
MEAN_GT_PER_IMAGE = 3.0
DIFFICULT_FRACTION = 0.2
DETS_PER_IMAGE = 100  # SPP-net / R-CNN keep the top 100 detections per image
N_CLASSES = 20
IMAGE_SIZE = 500.0


def random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    """n random boxes inside an IMAGE_SIZE square: float32 [n, 4]."""
    xy = rng.uniform(0, IMAGE_SIZE * 0.8, size=(n, 2))
    wh = rng.uniform(10, IMAGE_SIZE * 0.5, size=(n, 2))
    return np.concatenate([xy, np.minimum(xy + wh, IMAGE_SIZE)], axis=1).astype(np.float32)


def generate_set(seed: int = 0):
    """(gt_records, detections, class_names) of VOC 2007 test's size."""
    rng = np.random.default_rng(seed)
    class_names = tuple(f"class{c:02d}" for c in range(N_CLASSES))
    records, detections = [], {}
    for i in range(N_IMAGES):
        n = max(1, rng.poisson(MEAN_GT_PER_IMAGE))
        boxes = random_boxes(rng, n)
        labels = rng.integers(0, N_CLASSES, n)
        image_id = f"{i:06d}"
        records.append(ImageRecord(image_id, Path(f"{image_id}.jpg"), int(IMAGE_SIZE), int(IMAGE_SIZE),
                                   boxes, labels, rng.random(n) < DIFFICULT_FRACTION))
        n_near = DETS_PER_IMAGE // 3
        src = rng.integers(0, n, n_near)
        near = boxes[src] + rng.normal(0, 8, size=(n_near, 4)).astype(np.float32)
        near[:, 2:] = np.maximum(near[:, 2:], near[:, :2] + 1)
        det_boxes = np.concatenate([near, random_boxes(rng, DETS_PER_IMAGE - n_near)])
        det_labels = np.concatenate([labels[src], rng.integers(0, N_CLASSES, DETS_PER_IMAGE - n_near)])
        scores = rng.random(DETS_PER_IMAGE).astype(np.float32)
        detections[image_id] = Detections(det_boxes, scores, det_labels.astype(np.int64))
    return records, detections, class_names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--metric", choices=("voc07", "voc12"), default="voc07")
    args = parser.parse_args()
    records, detections, class_names = generate_set()
    n_gt = sum(len(r.labels) for r in records)
    n_diff = sum(int(r.difficult.sum()) for r in records)
    n_det = sum(len(d) for d in detections.values())
    print(f"{len(records)} images, {n_gt} gt boxes ({n_diff} difficult), {n_det} detections, "
          f"{len(class_names)} classes")
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        result = evaluate_voc(records, detections, class_names, use_07_metric=args.metric == "voc07")
        times.append(time.perf_counter() - t0)
    print(f"mAP ({result.metric}) = {result.mAP:.4f}")
    print("runs (s): " + ", ".join(f"{t:.2f}" for t in times))
    print(f"median: {statistics.median(times):.2f} s")


if __name__ == "__main__":
    main()
