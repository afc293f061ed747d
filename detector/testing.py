"""Testing a trained detector on a dataset split: detections, result files, evaluation report."""
from __future__ import annotations

import copy
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from .build import build_dataset
from .data import coco_category_ids, report_dropped_classes
from .data.verify import verify_images
from .detector import Detector
from .evaluation import (analyse_detections, evaluate_detections, format_report_table, write_coco_results,
                         write_report, write_voc_results)
from .fileio import check_output_dir
from .progress import progress_of
from .records import Detections
from .timing import timed_stage
from .window_features import ImageSource, shippable, decode_shipped

logger = logging.getLogger(__name__)

TEST_STAGES = ("proposals", "conv", "pool", "fc", "svm", "bbox", "nms")


@dataclass(frozen=True)
class EvaluationRun:
    """What a test run produced: the metric result (and without box regression), per-image
    stage seconds, skipped images, files."""

    result: object  # VOCResult or COCOResult
    detections: dict[str, Detections]
    seconds_per_image: dict[str, float]
    out_dir: Path
    without_bbox: object | None = None  # the same metric without box regression
    skipped_images: list[dict] = field(default_factory=list)


def detect_records(detector: Detector, images: list[ImageSource], windows: Iterable | None,
                   progress: bool = True, without_bbox: bool = False
                   ) -> tuple[dict[str, Detections], dict[str, float], dict[str, Detections] | None]:
    """Detections of every image, total seconds per stage, and (if ``without_bbox``)
    the same detections without box regression, from the same scores.

    ``windows`` gives each image's proposals, in the order of ``images`` (a
    list, or a stream still being computed: the time spent waiting for them
    is counted under "proposals"); None computes them per image (their time
    is then counted under "proposals" too).
    """
    detections: dict[str, Detections] = {}
    unregressed: dict[str, Detections] | None = {} if without_bbox else None
    timings: dict[str, float] = {}
    upcoming = None if windows is None else iter(windows)
    for image in progress_of(images, desc="test", unit="img", enabled=progress):
        w = None
        if upcoming is not None:
            with timed_stage(timings, "proposals"):
                w = next(upcoming)
        scored = detector.score_windows(image, w, timings=timings)
        detections[image.key] = detector.postprocess(scored, timings)
        if unregressed is not None:
            unregressed[image.key] = detector.postprocess(scored, regress=False)
    for _ in upcoming or ():  # let a stream finish (stream_split then consolidates its store)
        pass
    return detections, timings, unregressed


def detect_on_backend(detector: Detector, images: list[ImageSource], windows: list, backend,
                      progress: bool = True, without_bbox: bool = False
                      ) -> tuple[dict[str, Detections], dict[str, float], dict[str, Detections] | None]:
    """:func:`detect_records` with the images spread over a backend's workers (Ray): each
    worker gets a CPU copy of the detector once and the images' file bytes and windows."""
    shipped = copy.deepcopy(detector).with_threads(backend.options.threads)
    shipped.features.backbone.cpu()
    detections: dict[str, Detections] = {}
    unregressed: dict[str, Detections] | None = {} if without_bbox else None
    timings: dict[str, float] = {}
    for i, (dets, plain, seconds) in backend.map(
            _detect_shipped, list(zip(images, windows)), (shipped, without_bbox),
            pack=lambda item: (shippable(item[0]), item[1]), desc="test", progress=progress):
        # Arrays from Ray's object store are read-only: the caller gets its own, as locally.
        detections[images[i].key] = _writable(dets)
        if unregressed is not None:
            unregressed[images[i].key] = _writable(plain)
        for stage, s in seconds.items():
            timings[stage] = timings.get(stage, 0.0) + s
    order = [im.key for im in images]  # the local path's order, whatever order shards finished in
    return ({k: detections[k] for k in order}, timings,
            None if unregressed is None else {k: unregressed[k] for k in order})


def _writable(dets: Detections) -> Detections:
    return Detections(dets.boxes.copy(), dets.scores.copy(), dets.labels.copy())


def _detect_shipped(item, detector: Detector, without_bbox: bool):
    """Detections (and without box regression) of one shipped image, and its stage seconds."""
    (name, data, flip), windows = item
    timings: dict[str, float] = {}
    scored = detector.score_windows(decode_shipped(name, data, flip), windows, timings=timings)
    dets = detector.postprocess(scored, timings)
    return dets, detector.postprocess(scored, regress=False) if without_bbox else None, timings


def run_test(detector: Detector, split: str, out_dir: str | os.PathLike, metric: str = "voc07",
             data_root: str | None = None, data_format: str | None = None,
             cache_dir: str | os.PathLike | None = None, cache_features: bool = False,
             progress: bool = True, extra: dict | None = None, pipeline: bool = True,
             backend=None) -> EvaluationRun:
    """Run ``detector`` on ``split`` of its dataset (or the one at ``data_root``), evaluate, report.

    Writes to ``out_dir``: ``detections.json`` (COCO results), ``voc/comp4_det_<split>_<class>.txt``,
    ``metrics.json``, ``report.md`` and PR-curve PNGs; with box regressors also
    ``detections_without_bbox.json`` (the same windows unregressed, whose mAP
    metrics.json gives as ``without_bbox_regression``). Proposals are cached
    under ``cache_dir`` (default the config's cache root). With ``pipeline``
    the missing ones are computed by worker processes while the network runs
    on the images whose windows are ready (:func:`proposals.compute.stream_split`);
    without, all of them first. Either way "proposals_incl_cache_io" is the
    time spent on or waiting for them and "total_excluding_proposals" the
    rest of the detection loop's wall time per image (image decoding
    included); the detections are the same.

    Every test image is checked first: an unreadable one is skipped (and
    listed in metrics.json) unless ``data.strict_images``; an image whose size
    differs from its annotation is an error. The model's classes are evaluated:
    objects of the split's other classes are left out, named with their counts
    in a warning and in metrics.json's ``not_in_model``.

    ``cache_features`` keeps the test images' window features under
    ``cache_dir`` (SPP: conv5 maps; R-CNN mode: per-window pool5, as R-CNN's
    own pipeline cached its test set): another model on the same backbone then
    tests without conv passes (the times reported are then cache reads, and
    the report says so).

    ``backend``: a ``detector.ray_backend.RayBackend``: the proposals, then the
    detections, are computed by its workers over shards of images (no
    pipeline; test features are not cached). The detections are the local
    path's; the stage seconds are the workers' summed.
    """
    from proposals.compute import compute_split, stream_split

    cfg = detector.config
    out_dir = check_output_dir(out_dir, "test output folder")
    cache_root = Path(cache_dir) if cache_dir is not None else cfg.cache_root()
    # The model's class order: labels must index its classes. Objects of a class it
    # was not trained on are left out and reported once (a split with nothing else is an error).
    dataset = build_dataset(cfg.data, split, class_names=detector.class_names, root=data_root,
                            format=data_format, drop_other_classes=True)
    root = data_root or cfg.data.root
    not_in_model = report_dropped_classes(dataset, root, "the model")
    verified = verify_images(list(dataset), cache_root / "image_checks.json",
                             strict=cfg.data.strict_images, progress=progress, what=f"{root} {split} split")
    records = list(verified.records)
    images = [ImageSource.from_record(r, verified.digests[r.image_id]) for r in records]

    t = time.perf_counter()
    proposal_args = (records, cfg.proposals, cache_root / "proposals", dataset.name, split)
    if backend is not None:
        if cache_features:
            logger.warning("test features are not cached with --backend ray (the workers compute them)")
            cache_features = False
        store = compute_split(*proposal_args, progress=progress, backend=backend)
        windows = [store.load(r.image_id) for r in records]
    elif pipeline:  # the windows come as the workers find them, in image order
        windows = (w for _, w in stream_split(*proposal_args, workers=cfg.proposals.workers or None))
    else:
        store = compute_split(*proposal_args, workers=cfg.proposals.workers or None, progress=progress)
        windows = [store.load(r.image_id) for r in records]
    proposal_seconds = time.perf_counter() - t

    if cache_features:
        detector = detector.with_features(detector.features.with_cache(cache_root / "test_features"))
    t = time.perf_counter()
    compare = detector.regressors is not None
    if backend is not None:
        detections, stage_seconds, unregressed = detect_on_backend(detector, images, windows, backend, progress,
                                                                   without_bbox=compare)
    else:
        detections, stage_seconds, unregressed = detect_records(detector, images, windows, progress,
                                                                without_bbox=compare)
    waited = stage_seconds.pop("proposals", 0.0)
    detect_seconds = time.perf_counter() - t - waited

    n = max(len(records), 1)
    per_image = {s: stage_seconds.get(s, 0.0) / n for s in TEST_STAGES if s != "proposals"}
    per_image["total_excluding_proposals"] = detect_seconds / n
    per_image["proposals_incl_cache_io"] = (proposal_seconds + waited) / n

    # A COCO dataset keeps its own category ids in the results file; others use label + 1.
    category_ids = dict(zip(dataset.class_names, coco_category_ids(dataset)))
    write_coco_results(out_dir / "detections.json", detections, detector.class_names, category_ids)
    if unregressed is not None:  # the same windows without box regression, for `sppnet evaluate`
        write_coco_results(out_dir / "detections_without_bbox.json", unregressed, detector.class_names,
                           category_ids)
    write_voc_results(out_dir / "voc", detections, detector.class_names, split)
    with timed_stage(stage_seconds, "evaluate"):
        result = evaluate_detections(records, detections, detector.class_names, metric,
                                     category_ids=category_ids)
    extra = dict(extra or {})
    if cache_features:
        extra["test_features"] = f"cached under {cache_root / 'test_features'}"
    plain = None
    if compare:  # the paper's ablation: the same model without box regression
        plain = evaluate_detections(records, unregressed, detector.class_names, metric,
                                    category_ids=category_ids)
        extra["without_bbox_regression"] = {"mAP": plain.mAP, "AP": dict(plain.ap)}
    extra["skipped_images"] = verified.bad_as_dicts()
    extra["not_in_model"] = not_in_model
    analysis = analyse_detections(records, detections, detector.class_names,  # errors, confusion, F1
                                  use_07_metric=metric == "voc07")
    write_report(out_dir, result, config=cfg, analysis=analysis,
                 timings={"seconds_per_image": per_image, "evaluate_s": stage_seconds["evaluate"],
                          "images": len(records)},
                 extra={"split": split, "data_root": root, **extra})
    return EvaluationRun(result, detections, per_image, out_dir, plain, verified.bad_as_dicts())


def print_outcome(outcome: EvaluationRun) -> None:
    print(format_report_table(outcome.result))
    if outcome.without_bbox is not None:
        print(f"mAP without box regression: {100 * outcome.without_bbox.mAP:.1f}")
    if outcome.skipped_images:
        print(f"skipped {len(outcome.skipped_images)} unreadable image(s): "
              + ", ".join(s["file"] for s in outcome.skipped_images[:5]))
    print("seconds per image: " + ", ".join(f"{k} {v:.4f}" for k, v in outcome.seconds_per_image.items()))
    print(f"report: {outcome.out_dir / 'report.md'}")
