"""Testing a trained detector on a dataset split: detections, result files, evaluation report."""
from __future__ import annotations

import copy
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from proposals.config import ProposalConfig

from ..build import EvaluationData, build_evaluation_data
from ..data import coco_category_ids, report_dropped_classes
from ..data.verify import verify_images
from .detector import Detector
from ..evaluation import (Analysis, analyse_detections, evaluate_detections, format_report_table,
                         write_coco_results, write_report, write_voc_results)
from ..fileio import check_output_dir
from ..model import TrainedModel
from ..progress import progress_of
from ..records import Detections
from ..timing import timed_stage
from ..features.pool5 import ImageSource, shippable, decode_shipped

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
    shipped = copy.deepcopy(dataclasses.replace(detector, test=dataclasses.replace(
        detector.test, threads=backend.options.threads)))
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


@dataclass(frozen=True)
class EvaluationOptions:
    """How a test run goes (``sppnet test``'s choices).

    ``data_root``/``data_format``: another copy of the data than the model's;
    ``cache_dir``: where the split's proposals (and with ``cache_features`` its
    window features) are cached, default the model config's cache root;
    ``pipeline``: compute missing proposals in worker processes while the
    network runs; ``extra``: more keys for metrics.json.
    """

    split: str
    out_dir: Path
    metric: str = "voc07"
    data_root: str | None = None
    data_format: str | None = None
    cache_dir: Path | None = None
    cache_features: bool = False
    pipeline: bool = True
    progress: bool = True
    extra: Mapping = field(default_factory=dict)


def run_model_test(model: TrainedModel, options: EvaluationOptions, backend=None) -> EvaluationRun:
    """Run a model on ``options.split`` of its dataset (or the one at ``options.data_root``),
    evaluate, report: :func:`run_test` on the split its config places."""
    data = build_evaluation_data(model.config, options.split, model.detector.class_names,
                                 root=options.data_root, format=options.data_format, cache_dir=options.cache_dir)
    return run_test(model.detector, data, options, provenance=model.config, backend=backend)


def run_test(detector: Detector, data: EvaluationData, options: EvaluationOptions, provenance: object = None,
             backend=None) -> EvaluationRun:
    """Run ``detector`` on ``data``'s split, evaluate, report.

    Writes to ``options.out_dir``: ``detections.json`` (COCO results),
    ``voc/comp4_det_<split>_<class>.txt``, ``metrics.json`` (with ``provenance``,
    the model's config, under "config"), ``report.md`` and PR-curve PNGs; with box
    regressors also ``detections_without_bbox.json`` (the same windows
    unregressed, whose mAP metrics.json gives as ``without_bbox_regression``).
    Proposals are cached under ``data.cache_root``. With ``options.pipeline``
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

    ``options.cache_features`` keeps the test images' window features under
    the cache root (SPP: conv5 maps; R-CNN mode: per-window pool5, as R-CNN's
    own pipeline cached its test set): another model on the same backbone then
    tests without conv passes (the times reported are then cache reads, and
    the report says so).

    ``backend``: a ``detector.ray_backend.RayBackend``: the proposals, then the
    detections, are computed by its workers over shards of images (no
    pipeline; test features are not cached). The detections are the local
    path's; the stage seconds are the workers' summed.
    """
    out_dir = check_output_dir(options.out_dir, "test output folder")
    not_in_model = report_dropped_classes(data.dataset, data.root, "the model")
    verified = verify_images(list(data.dataset), data.cache_root / "image_checks.json", strict=data.strict_images,
                             progress=options.progress, what=f"{data.root} {options.split} split")
    records = list(verified.records)
    cache_features = options.cache_features and backend is None
    if options.cache_features and backend is not None:
        logger.warning("test features are not cached with --backend ray (the workers compute them)")
    if cache_features:
        detector = dataclasses.replace(
            detector, features=detector.features.with_cache(data.cache_root / "test_features"))
    detected = detect_split(detector, data, records, verified.digests, options, backend)

    # A COCO dataset keeps its own category ids in the results file; others use label + 1.
    category_ids = dict(zip(data.dataset.class_names, coco_category_ids(data.dataset)))
    write_detections(out_dir, detected, detector.class_names, category_ids, options.split)
    evaluated = evaluate_split(records, detected, detector.class_names, category_ids, options.metric)
    extra = dict(options.extra)
    if cache_features:
        extra["test_features"] = f"cached under {data.cache_root / 'test_features'}"
    if evaluated.without_bbox is not None:
        extra["without_bbox_regression"] = {"mAP": evaluated.without_bbox.mAP,
                                            "AP": dict(evaluated.without_bbox.ap)}
    extra["skipped_images"] = verified.bad_as_dicts()
    extra["not_in_model"] = not_in_model
    write_report(out_dir, evaluated.result, config=provenance, analysis=evaluated.analysis,
                 timings={"seconds_per_image": detected.seconds_per_image, "evaluate_s": evaluated.seconds,
                          "images": len(records)},
                 extra={"split": options.split, "data_root": data.root, **extra})
    return EvaluationRun(evaluated.result, detected.detections, detected.seconds_per_image, out_dir,
                         evaluated.without_bbox, verified.bad_as_dicts())


@dataclass(frozen=True)
class DetectedSplit:
    """A split's detections (and, with box regressors, the same windows unregressed) and
    seconds per image: per network stage, proposals, and the rest of the loop."""

    detections: dict[str, Detections]
    unregressed: dict[str, Detections] | None
    seconds_per_image: dict[str, float]


def detect_split(detector: Detector, data: EvaluationData, records: list, digests: dict,
                 options: EvaluationOptions, backend=None) -> DetectedSplit:
    """Detections of ``records`` (checked images of ``data``'s split) with their proposals (cached
    under ``data.cache_root``), locally or on ``backend``'s workers; timed per image."""
    images = [ImageSource.from_record(r, digests[r.image_id]) for r in records]
    t = time.perf_counter()
    windows = split_windows(records, data, detector.proposals, options, backend)
    proposal_seconds = time.perf_counter() - t

    t = time.perf_counter()
    compare = detector.regressors is not None
    if backend is not None:
        detections, stage_seconds, unregressed = detect_on_backend(detector, images, windows, backend,
                                                                   options.progress, without_bbox=compare)
    else:
        detections, stage_seconds, unregressed = detect_records(detector, images, windows, options.progress,
                                                                without_bbox=compare)
    waited = stage_seconds.pop("proposals", 0.0)
    detect_seconds = time.perf_counter() - t - waited

    n = max(len(records), 1)
    per_image = {s: stage_seconds.get(s, 0.0) / n for s in TEST_STAGES if s != "proposals"}
    per_image["total_excluding_proposals"] = detect_seconds / n
    per_image["proposals_incl_cache_io"] = (proposal_seconds + waited) / n
    return DetectedSplit(detections, unregressed, per_image)


def split_windows(records: list, data: EvaluationData, proposals: ProposalConfig, options: EvaluationOptions,
                  backend=None) -> Iterable:
    """Each record's proposals, in order: read from (or computed into) the cache; with
    ``options.pipeline`` (and no backend) a stream still being computed by worker processes."""
    from proposals.compute import compute_split, stream_split

    args = (records, proposals, data.cache_root / "proposals", data.dataset.name, options.split)
    if backend is not None:
        store = compute_split(*args, progress=options.progress, backend=backend)
    elif options.pipeline:  # the windows come as the workers find them, in image order
        return (w for _, w in stream_split(*args, workers=proposals.workers or None))
    else:
        store = compute_split(*args, workers=proposals.workers or None, progress=options.progress)
    return [store.load(r.image_id) for r in records]


def write_detections(out_dir: Path, detected: DetectedSplit, class_names: Sequence[str],
                     category_ids: dict, split: str) -> None:
    """The results files: COCO JSON (also unregressed, for `sppnet evaluate`) and VOC comp4 files."""
    write_coco_results(out_dir / "detections.json", detected.detections, class_names, category_ids)
    if detected.unregressed is not None:
        write_coco_results(out_dir / "detections_without_bbox.json", detected.unregressed, class_names,
                           category_ids)
    write_voc_results(out_dir / "voc", detected.detections, class_names, split)


@dataclass(frozen=True)
class EvaluatedSplit:
    """The metric of a split's detections (and without box regression), their error analysis,
    and the seconds the evaluation took."""

    result: object  # VOCResult or COCOResult
    without_bbox: object | None
    analysis: Analysis
    seconds: float


def evaluate_split(records: list, detected: DetectedSplit, class_names: Sequence[str], category_ids: dict,
                   metric: str) -> EvaluatedSplit:
    timings: dict[str, float] = {}
    with timed_stage(timings, "evaluate"):
        result = evaluate_detections(records, detected.detections, class_names, metric,
                                     category_ids=category_ids)
    without_bbox = None
    if detected.unregressed is not None:  # the paper's ablation: the same model without box regression
        without_bbox = evaluate_detections(records, detected.unregressed, class_names, metric,
                                           category_ids=category_ids)
    analysis = analyse_detections(records, detected.detections, class_names,  # errors, confusion, F1
                                  use_07_metric=metric == "voc07")
    return EvaluatedSplit(result, without_bbox, analysis, timings["evaluate"])


def print_outcome(outcome: EvaluationRun) -> None:
    print(format_report_table(outcome.result))
    if outcome.without_bbox is not None:
        print(f"mAP without box regression: {100 * outcome.without_bbox.mAP:.1f}")
    if outcome.skipped_images:
        print(f"skipped {len(outcome.skipped_images)} unreadable image(s): "
              + ", ".join(s["file"] for s in outcome.skipped_images[:5]))
    print("seconds per image: " + ", ".join(f"{k} {v:.4f}" for k, v in outcome.seconds_per_image.items()))
    print(f"report: {outcome.out_dir / 'report.md'}")
