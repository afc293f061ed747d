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
from .detector import Detector, timed_stage
from .evaluation import (evaluate_coco, evaluate_voc, format_report_table, write_coco_results,
                         write_report, write_voc_results)
from .evaluation import analyse_detections
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
                   progress: bool = True, without_bbox: bool = False, window_cache=None
                   ) -> tuple[dict[str, Detections], dict[str, float], dict[str, Detections] | None]:
    """Detections of every record, total seconds per stage, and (if ``without_bbox``)
    the same detections without box regression, from the same scores.

    ``windows`` maps image ids to cached proposals; None computes them per image
    (their time is then counted under "proposals"). ``window_cache`` (R-CNN
    mode, with ``windows``) reads and fills a per-window pool5 cache; its time
    is counted under "conv".
    """
    detections: dict[str, Detections] = {}
    unregressed: dict[str, Detections] | None = {} if without_bbox else None
    timings: dict[str, float] = {}
    for r in tqdm(records, desc="test", disable=not progress, unit="img"):
        image = read_image(r.path)
        w = None if windows is None else windows[r.image_id]
        pooled = None
        if window_cache is not None and w is not None:
            with timed_stage(timings, "conv"):
                pooled = window_cache.pool5(detector.backbone, r, w, detector.pool, detector.cfg.rcnn,
                                            read_image)
        scored = detector.score_windows(image, w, name=str(r.path), timings=timings, pooled=pooled)
        detections[r.image_id] = detector.postprocess(scored, timings)
        if unregressed is not None:
            unregressed[r.image_id] = detector.postprocess(scored, regress=False)
    return detections, timings, unregressed


def evaluate_detections(records, detections, class_names, metric: str, iou: float = 0.5,
                        category_ids: dict | None = None):
    if metric == "coco":
        return evaluate_coco(records, detections, class_names, category_ids)
    if metric not in ("voc07", "voc12"):
        raise ValueError(f"metric {metric!r} must be one of {', '.join(METRICS)}")
    return evaluate_voc(records, detections, class_names, iou_threshold=iou,
                        use_07_metric=metric == "voc07")


def run_test(detector: Detector, split: str, out_dir: str | os.PathLike, metric: str = "voc07",
             data_root: str | None = None, progress: bool = True,
             extra: dict | None = None, cache_rcnn_features: bool = False) -> EvaluationRun:
    """Run ``detector`` on ``split`` of its dataset (or ``data_root``), evaluate, write a report.

    Writes to ``out_dir``: ``detections.json`` (COCO results), ``voc/comp4_det_<split>_<class>.txt``,
    ``metrics.json``, ``report.md`` and PR-curve PNGs. Proposals are computed
    (and cached under the config's cache root) first, so their time is
    reported separately; "total_excluding_proposals" is the wall time of the
    detection loop per image (image decoding included).

    ``cache_rcnn_features`` (R-CNN mode only) keeps the test windows' pool5 in
    R-CNN's per-window cache under the config's cache root, as R-CNN's own
    pipeline did: a second model on the same backbone then tests without conv
    passes (the times reported are then cache reads, and the report says so).
    """
    from proposals import compute_split

    cfg = detector.cfg
    if cache_rcnn_features and cfg.mode != "rcnn":
        raise ValueError("cache_rcnn_features is for R-CNN models (SPP-net tests from conv5 maps)")
    if data_root:
        cfg.data.root = data_root
    # The model's class order: labels must index its classes, and an object of
    # a class it was not trained on is an error naming the annotation file.
    dataset = build_dataset(cfg, split, class_names=detector.class_names)
    records = list(dataset)
    out_dir = Path(out_dir)

    t = time.perf_counter()
    store = compute_split(records, cfg.proposals, cfg.cache_root() / "proposals", dataset.name, split,
                          workers=cfg.proposals.workers or None, progress=progress)
    windows = {r.image_id: store.load(r.image_id) for r in records}
    proposal_seconds = time.perf_counter() - t

    t = time.perf_counter()
    compare = detector.regressors is not None
    window_cache = None
    if cache_rcnn_features:
        from .rcnn import window_feature_cache
        window_cache = window_feature_cache(cfg.cache_root() / "rcnn_pool5_test", detector.backbone, cfg)
    detections, stage_seconds, unregressed = detect_records(detector, records, windows, progress,
                                                            without_bbox=compare, window_cache=window_cache)
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
    extra = dict(extra or {})
    if window_cache is not None:
        extra["rcnn_test_features"] = f"per-window pool5 cache {window_cache.dir}"
    if compare:  # the paper's ablation: the same model without box regression
        plain = evaluate_detections(records, unregressed, detector.class_names, metric,
                                    category_ids=category_ids)
        extra["without_bbox_regression"] = {"mAP": plain.mAP, "AP": dict(plain.ap)}
    analysis = analyse_detections(records, detections, detector.class_names,  # errors, confusion, F1
                                  use_07_metric=metric == "voc07")
    write_report(out_dir, result, config=cfg, analysis=analysis,
                 timings={"seconds_per_image": per_image, "evaluate_s": eval_seconds,
                          "images": len(records)},
                 extra={"split": split, "data_root": cfg.data.root, **extra})
    return EvaluationRun(result, detections, per_image, out_dir)


def print_outcome(outcome: EvaluationRun) -> None:
    print(format_report_table(outcome.result))
    print("seconds per image: " + ", ".join(f"{k} {v:.4f}" for k, v in outcome.seconds_per_image.items()))
    print(f"report: {outcome.out_dir / 'report.md'}")
