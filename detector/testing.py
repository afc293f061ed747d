"""Testing a trained detector on a dataset split: detections, result files, evaluation report."""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .data import coco_category_ids
from .detector import Detector
from .evaluation import (evaluate_coco, evaluate_voc, format_report_table, write_coco_results,
                         write_report, write_voc_results)
from .images import read_image
from .records import Detections
from .training import build_dataset

logger = logging.getLogger(__name__)

METRICS = ("voc07", "voc12", "coco")
TEST_STAGES = ("proposals", "conv", "pool", "fc", "svm", "bbox", "nms")


@dataclass(frozen=True)
class EvaluationRun:
    """What a test run produced: the metric result, per-image stage seconds, files."""

    result: object  # VOCResult or COCOResult
    detections: dict[str, Detections]
    seconds_per_image: dict[str, float]
    out_dir: Path


def detect_records(detector: Detector, records, windows: dict[str, np.ndarray] | None,
                   progress: bool = True) -> tuple[dict[str, Detections], dict[str, float]]:
    """Detections of every record, and total seconds per stage.

    ``windows`` maps image ids to cached proposals; None computes them per image
    (their time is then counted under "proposals").
    """
    detections: dict[str, Detections] = {}
    timings: dict[str, float] = {}
    for r in tqdm(records, desc="test", disable=not progress, unit="img"):
        image = read_image(r.path)
        w = None if windows is None else windows[r.image_id]
        detections[r.image_id] = detector.detect(image, w, name=str(r.path), timings=timings)
    return detections, timings


def evaluate_detections(records, detections, class_names, metric: str, iou: float = 0.5,
                        category_ids: dict | None = None):
    if metric == "coco":
        return evaluate_coco(records, detections, class_names, category_ids)
    if metric not in ("voc07", "voc12"):
        raise ValueError(f"metric {metric!r} must be one of {', '.join(METRICS)}")
    return evaluate_voc(records, detections, class_names, iou_threshold=iou,
                        use_07_metric=metric == "voc07")


def run_test(detector: Detector, split: str, out_dir: str | os.PathLike, metric: str = "voc07",
                  data_root: str | None = None, cache_dir: str | os.PathLike | None = None,
                  progress: bool = True, extra: dict | None = None) -> EvaluationRun:
    """Run ``detector`` on ``split`` of its dataset (or ``data_root``), evaluate, write a report.

    Writes to ``out_dir``: ``detections.json`` (COCO results), ``voc/comp4_det_<split>_<class>.txt``,
    ``metrics.json``, ``report.md`` and PR-curve PNGs. Proposals are computed
    (and cached under ``cache_dir``, default ``<workdir>/cache/proposals``) first,
    so their time is reported separately from the detector's.
    """
    from proposals import compute_split

    cfg = detector.cfg
    if data_root:
        cfg.data.root = data_root
    # The model's class order: labels must index its classes, and an object of
    # a class it was not trained on is an error naming the annotation file.
    dataset = build_dataset(cfg, split, class_names=detector.class_names)
    records = list(dataset)
    out_dir = Path(out_dir)
    cache_dir = Path(cache_dir) if cache_dir else Path(cfg.workdir) / "cache" / "proposals"

    t = time.perf_counter()
    store = compute_split(records, cfg.proposals, cache_dir, dataset.name, split,
                          workers=cfg.proposals.workers or None, progress=progress)
    windows = {r.image_id: store.load(r.image_id) for r in records}
    proposal_seconds = time.perf_counter() - t

    t = time.perf_counter()
    detections, stage_seconds = detect_records(detector, records, windows, progress)
    detect_seconds = time.perf_counter() - t

    n = max(len(records), 1)
    per_image = {s: stage_seconds.get(s, 0.0) / n for s in TEST_STAGES if s != "proposals"}
    per_image["total_excluding_proposals"] = detect_seconds / n
    per_image["proposals_incl_cache_io"] = proposal_seconds / n

    # A COCO dataset keeps its own category ids in the results file; others use label + 1.
    category_ids = dict(zip(dataset.class_names, coco_category_ids(dataset)))
    write_coco_results(out_dir / "detections.json", detections, detector.class_names, category_ids)
    write_voc_results(out_dir / "voc", detections, detector.class_names, split)
    t = time.perf_counter()
    result = evaluate_detections(records, detections, detector.class_names, metric,
                                 category_ids=category_ids)
    eval_seconds = time.perf_counter() - t
    write_report(out_dir, result, config=cfg,
                 timings={"seconds_per_image": per_image, "evaluate_s": eval_seconds,
                          "images": len(records)},
                 extra={"split": split, "data_root": cfg.data.root, **(extra or {})})
    return EvaluationRun(result, detections, per_image, out_dir)


def print_outcome(outcome: EvaluationRun) -> None:
    print(format_report_table(outcome.result))
    print("seconds per image: " + ", ".join(f"{k} {v:.4f}" for k, v in outcome.seconds_per_image.items()))
    print(f"report: {outcome.out_dir / 'report.md'}")
