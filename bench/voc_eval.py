"""Time a VOC evaluation as `sppnet test` / `sppnet evaluate` run it, on a generated
set the size of VOC 2007 test: evaluate_voc, then the error analysis.

4952 images, about 15k ground-truth boxes over 20 classes (about 20% difficult),
100 detections per image (495,200 in all): a third are jittered copies of
ground-truth boxes (so there are true positives, duplicates and near misses),
the rest random boxes. Fixed seed. Prints the median of several runs per part:
``evaluate_voc``, ``analysis`` (analyse_detections: matching, errors,
confusion matrix, F1 curves, AP by size, worst examples) and ``total``; then,
for profiling, each part of the analysis on its own (on one shared matching).
Writes the record to bench/results/voc_eval.json (``--out``).

    .venv/bin/python -m bench.voc_eval [--runs 5] [--metric voc07|voc12] [--out FILE]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np

from detector.evaluation.analysis import analyse_detections, worst_examples
from detector.evaluation.confusion import confusion_matrix
from detector.evaluation.errors import analyse_errors
from detector.evaluation.matching import match_records
from detector.evaluation.report import collect_versions
from detector.evaluation.size_ap import ap_by_size
from detector.evaluation.thresholds import ALL_CLASSES, f1_curves
from detector.evaluation.voc_ap import evaluate_voc
from detector.fileio import write_json_atomic
from detector.records import Detections, ImageRecord

RESULTS = Path(__file__).resolve().parent / "results"

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


def median_times(fn: Callable[[], object], runs: int) -> list[float]:
    """Wall-clock seconds of ``runs`` calls of ``fn``."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--metric", choices=("voc07", "voc12"), default="voc07")
    parser.add_argument("--out", type=Path, default=RESULTS / "voc_eval.json")
    args = parser.parse_args(argv)
    use07 = args.metric == "voc07"
    records, detections, class_names = generate_set()
    n_gt = sum(len(r.labels) for r in records)
    n_diff = sum(int(r.difficult.sum()) for r in records)
    n_det = sum(len(d) for d in detections.values())
    print(f"{len(records)} images, {n_gt} gt boxes ({n_diff} difficult), {n_det} detections, "
          f"{len(class_names)} classes; median of {args.runs} runs")
    parts: dict[str, list[float]] = {"evaluate_voc": [], "analysis": [], "total": []}
    for _ in range(args.runs):  # as the commands run them: one after the other
        t0 = time.perf_counter()
        result = evaluate_voc(records, detections, class_names, use_07_metric=use07)
        t1 = time.perf_counter()
        analysis = analyse_detections(records, detections, class_names, use_07_metric=use07)
        t2 = time.perf_counter()
        for name, seconds in (("evaluate_voc", t1 - t0), ("analysis", t2 - t1), ("total", t2 - t0)):
            parts[name].append(seconds)
    print(f"mAP ({result.metric}) = {result.mAP:.4f}, operating point {analysis.score_threshold:.4f}")
    for name, times in parts.items():
        print(f"{name:>14}: {statistics.median(times):.2f} s   (runs: {', '.join(f'{t:.2f}' for t in times)})")

    # The analysis' parts, each on its own, for profiling (they share one matching).
    matched = match_records(records, detections, class_names)
    threshold = analysis.score_threshold
    steps = {"match_records": lambda: match_records(records, detections, class_names),
             "errors": lambda: analyse_errors(matched, threshold, use07),
             "confusion_matrix": lambda: confusion_matrix(records, detections, class_names, threshold),
             "f1_curves": lambda: f1_curves(matched),
             "ap_by_size": lambda: ap_by_size(matched, use07),
             "worst_examples": lambda: worst_examples(matched, records, threshold)}
    analysis_parts = {name: median_times(fn, args.runs) for name, fn in steps.items()}
    print("analysis parts: " + ", ".join(f"{k} {statistics.median(v):.2f} s" for k, v in analysis_parts.items()))

    record = {
        "images": len(records), "gt_boxes": n_gt, "difficult": n_diff, "detections": n_det,
        "classes": len(class_names), "metric": result.metric, "mAP": result.mAP,
        "best_f1_threshold": threshold, "best_f1": analysis.f1[ALL_CLASSES].best_f1, "runs": args.runs,
        "median_s": {k: statistics.median(v) for k, v in parts.items()}, "runs_s": parts,
        "analysis_parts_median_s": {k: statistics.median(v) for k, v in analysis_parts.items()},
        "cpus": os.cpu_count(), "load_avg_at_end": os.getloadavg(), "versions": collect_versions(),
    }
    write_json_atomic(args.out, record)
    print(f"record: {args.out}")


if __name__ == "__main__":
    main()
