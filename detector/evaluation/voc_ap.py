"""PASCAL VOC detection average precision, vectorised.

Same rules as the official VOC devkit (``VOCevaldet.m``) and py-faster-rcnn's
``voc_eval.py`` (see ``design.md``, "Evaluation conventions"):

* The detections of one class are taken in order of decreasing score. The sort
  is stable: detections with tied scores keep their input order, which is the
  order of ``gt_records`` (images) and, within an image, the order of its
  ``Detections`` arrays. (MATLAB's ``sort`` is stable too; py-faster-rcnn's
  ``np.argsort`` quicksort is not, so its result on ties is arbitrary.)
* Each detection is compared with the ground-truth box of its class, in its
  image, with the highest IoU, whether or not that box is already matched.
  The IoU is ``detector.boxes.box_iou`` on continuous 0-based boxes; the VOC
  loader's conversion (x1 = xmin - 1, x2 = xmax) makes it equal to the
  devkit's "+1" formula on 1-based inclusive pixels.
* IoU >= ``iou_threshold`` (the official devkit's ``ovmax >= minoverlap``;
  py-faster-rcnn uses ``>``): a true positive if that box is unmatched (it
  becomes matched), a false positive (duplicate) if it is already matched.
  Below the threshold, or no ground truth of the class in the image: a false
  positive.
* If that best box is ``difficult`` and the IoU reaches the threshold, the
  detection counts neither way (it still occupies its place in the ranking,
  as in the devkit). Below the threshold it is a false positive, as in the
  devkit, even when the best box is difficult.
* Recall is over the non-difficult ground-truth boxes of the class.

Why it is fast: whether detection d is a true positive depends only on the
earlier detections whose best box is the same box. So, after one IoU over
every (detection, box of its image) pair (:mod:`detector.evaluation.pairs`,
all classes at once, masked by label), a detection is a true
positive exactly when it is the first, in score order, of the above-threshold
detections on a given non-difficult box: one ``np.unique`` per class instead
of a Python loop over detections.

A class with no non-difficult ground-truth object has an undefined AP: it is
NaN in :class:`VOCResult` and left out of the mAP (the devkit would divide by
zero). A class with ground truth but no detections has AP 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from detector.evaluation.pairs import first_max, image_pairs
from detector.records import Detections, ImageRecord

# VOC 2007 11-point AP samples recall at 0, 0.1, ..., 1.0. Built exactly as in
# py-faster-rcnn (np.arange), so 0.3, 0.6 and 0.7 are a hair above their
# decimal values (0.30000000000000004, ...), the same quirk its numbers have.
VOC07_RECALL_POINTS = np.arange(0.0, 1.1, 0.1)

# Precision where no detection has been counted yet (tp + fp = 0): the
# py-faster-rcnn guard against 0/0.
_EPS = np.finfo(np.float64).eps


class EvaluationInputError(ValueError):
    """Ground truth and detections that cannot be evaluated together."""


@dataclass(frozen=True)
class VOCResult:
    """Result of :func:`evaluate_voc`.

    Per-class dicts are keyed by class name, in ``class_names`` order.
    ``precision``/``recall`` are float64 arrays with one entry per detection of
    the class, in ranking order (the devkit's curve); for a class with no
    non-difficult ground truth both are empty and its AP is NaN.
    """

    metric: str  # "voc07" (11-point) or "voc12" (area under the curve)
    iou_threshold: float
    class_names: tuple[str, ...]
    ap: dict[str, float]
    precision: dict[str, np.ndarray]
    recall: dict[str, np.ndarray]
    n_gt: dict[str, int]  # non-difficult ground-truth boxes
    n_det: dict[str, int]  # detections, including those counted neither way
    mAP: float  # mean AP over classes with ground truth; NaN if none has any

    def summary(self) -> dict[str, float]:
        """Headline numbers: {"mAP": ...}."""
        return {"mAP": self.mAP}


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool) -> float:
    """Average precision from a ranked precision/recall curve.

    Args:
        recall, precision: [D] arrays in ranking order (recall non-decreasing).
        use_07_metric: True for VOC2007's 11-point interpolated AP (mean over
            recall thresholds t = 0, 0.1, ..., 1 of the highest precision at
            recall >= t, 0 where none); False for VOC2010+'s area under the
            interpolated (monotone non-increasing) precision/recall curve.
    Returns:
        AP in [0, 1] as a Python float; 0 for empty input.
    """
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if use_07_metric:
        ap = 0.0
        for t in VOC07_RECALL_POINTS:
            reached = recall >= t
            p = precision[reached].max() if reached.any() else 0.0
            ap += p / 11.0
        return float(ap)
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    # Interpolate: precision at recall r is the best precision at recall >= r.
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


@dataclass(frozen=True)
class FlatGroundTruth:
    """All records' boxes concatenated; image i's are ``offsets[i]:offsets[i + 1]``."""

    index: dict[str, int]  # image_id -> record index
    offsets: np.ndarray  # int64 [R + 1]
    boxes: np.ndarray  # float32 [G, 4]
    labels: np.ndarray  # int64 [G]
    difficult: np.ndarray  # bool [G]


def stack_boxes(arrays) -> np.ndarray:
    """Box arrays [n_i, 4] concatenated into float32 [sum n_i, 4] (also when there are none)."""
    return np.concatenate([np.asarray(b, np.float32).reshape(-1, 4) for b in arrays]
                          + [np.zeros((0, 4), np.float32)])


def flatten_ground_truth(gt_records: Sequence[ImageRecord], n_classes: int) -> FlatGroundTruth:
    """Concatenate all gt boxes, checking ids and labels."""
    index: dict[str, int] = {}
    for i, rec in enumerate(gt_records):
        index.setdefault(rec.image_id, i)
    counts = np.array([len(rec.labels) for rec in gt_records], np.int64)
    offsets = np.concatenate(([0], np.cumsum(counts)))
    labels = np.concatenate([r.labels for r in gt_records] + [np.zeros(0, np.int64)]).astype(np.int64)
    # The first record that is a repeat or holds a bad label is blamed (a repeat first).
    repeat = next((i for i, r in enumerate(gt_records) if index[r.image_id] != i), len(gt_records))
    bad = np.flatnonzero((labels < 0) | (labels >= n_classes))
    bad_image = int(np.searchsorted(offsets, bad[0], side="right")) - 1 if len(bad) else len(gt_records)
    if repeat < len(gt_records) and repeat <= bad_image:
        raise EvaluationInputError(f"image id {gt_records[repeat].image_id!r} appears twice in the ground truth")
    if len(bad):
        raise EvaluationInputError(f"image {gt_records[bad_image].image_id!r}: ground-truth label out of range "
                                   f"[0, {n_classes})")
    difficult = np.concatenate([r.difficult for r in gt_records] + [np.zeros(0, bool)]).astype(bool)
    return FlatGroundTruth(index, offsets, stack_boxes(r.boxes for r in gt_records), labels, difficult)


@dataclass(frozen=True)
class DetectionMatches:
    """Every detection, flattened in image order (``gt_records``) then input order,
    with the ground-truth boxes it overlaps most. Flat gt indices index
    :class:`FlatGroundTruth`'s boxes.

    ``best_iou``/``best_gt``: the same-class gt box with the highest IoU (-inf
    and -1 where the image has none); ``other_iou``/``other_gt``: the same over
    the boxes of the other classes (for error analysis).
    """

    image_index: np.ndarray  # int64 [D] index into gt_records
    det_index: np.ndarray  # int64 [D] index into that image's Detections
    boxes: np.ndarray  # float32 [D, 4]
    labels: np.ndarray  # int64 [D]
    scores: np.ndarray  # float64 [D]
    best_iou: np.ndarray  # float64 [D]
    best_gt: np.ndarray  # int64 [D]
    other_iou: np.ndarray  # float64 [D]
    other_gt: np.ndarray  # int64 [D]


def flatten_detections(gt_records: Sequence[ImageRecord], detections: Mapping[str, Detections],
                       index: Mapping[str, int], n_classes: int):
    """(image_index, det_index, boxes, labels, scores) of every detection, in
    DetectionMatches' order, checking ids and labels. The scores keep their
    dtype (float32 from this package), so comparisons with a Python float
    threshold round as they do per image."""
    unknown = [k for k in detections if k not in index]
    if unknown:
        raise EvaluationInputError(f"{len(unknown)} detected image id(s) are not in the ground truth, "
                                   f"e.g. {unknown[:3]}")
    found = [(i, detections[r.image_id]) for i, r in enumerate(gt_records) if r.image_id in detections]
    found = [(i, d) for i, d in found if len(d)]
    counts = np.array([len(d) for _, d in found], np.int64)
    image = np.repeat(np.array([i for i, _ in found], np.int64), counts)
    det_index = np.arange(len(image), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    labels = np.concatenate([d.labels for _, d in found] + [np.zeros(0, np.int64)]).astype(np.int64)
    bad = np.flatnonzero((labels < 0) | (labels >= n_classes))
    if len(bad):
        raise EvaluationInputError(f"image {gt_records[image[bad[0]]].image_id!r}: detection label out of range "
                                   f"[0, {n_classes})")
    scores = np.concatenate([d.scores for _, d in found] + [np.zeros(0, np.float32)])
    return image, det_index, stack_boxes(d.boxes for _, d in found), labels, scores


def match_detections(gt_records, detections, gt: FlatGroundTruth, n_classes: int) -> DetectionMatches:
    """Best same-class (and other-class) gt box for every detection (see DetectionMatches)."""
    image, det_index, boxes, labels, scores = flatten_detections(gt_records, detections, gt.index, n_classes)
    pairs = image_pairs(image, boxes, gt.offsets, gt.boxes)
    iou = pairs.iou.astype(np.float64)
    same = labels[pairs.det] == gt.labels[pairs.gt]
    # Only boxes of the detection's class compete for the match; the first of
    # equal maxima wins (in box order), like the devkit's strict ">".
    columns = []
    for mask in (same, ~same):
        best, position = first_max(np.where(mask, iou, -np.inf), pairs.det, len(labels))
        columns += [best, np.append(pairs.gt, -1)[position]]  # position -1: the appended -1
    return DetectionMatches(image, det_index, boxes, labels, scores.astype(np.float64), *columns)


def rank_by_class(labels: np.ndarray, scores: np.ndarray, n_classes: int) -> list[np.ndarray]:
    """Per class, int64 indices of its detections by decreasing score; the sort
    is stable (ties keep detection order) and done once for all classes."""
    by_score = np.argsort(-scores, kind="stable")
    by_class = by_score[np.argsort(labels[by_score], kind="stable")]
    return np.split(by_class, np.searchsorted(labels[by_class], np.arange(1, n_classes)))


def count_true_positives(best_iou: np.ndarray, best_gt: np.ndarray, gt_difficult: np.ndarray,
                         iou_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """TP/FP flags of ranked detections of one class.

    Args:
        best_iou: [D] IoU with the best same-class gt box (-inf if none), ranked.
        best_gt: [D] flat index of that box (-1 if none).
        gt_difficult: bool array indexed by flat gt index.
        iou_threshold: IoU that counts as a match (inclusive).
    Returns:
        (tp, fp): float64 [D] arrays of 0/1; both 0 for an ignored detection.
    """
    hit = best_iou >= iou_threshold
    ignored = np.zeros_like(hit)
    ignored[hit] = gt_difficult[best_gt[hit]]
    candidates = np.flatnonzero(hit & ~ignored)
    # The first candidate on each gt box (in ranking order) claims it; later
    # ones on the same box are duplicates.
    _, first = np.unique(best_gt[candidates], return_index=True)
    tp = np.zeros(len(hit))
    tp[candidates[first]] = 1.0
    fp = (~ignored).astype(np.float64) - tp
    return tp, fp


def precision_recall(tp: np.ndarray, fp: np.ndarray, n_pos: int) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall [D] after each ranked detection, from 0/1 flags tp, fp [D]
    and the number of positives ``n_pos`` (> 0)."""
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    return tp / np.maximum(tp + fp, _EPS), tp / n_pos


def evaluate_voc(gt_records: Sequence[ImageRecord], detections: Mapping[str, Detections],
                 class_names: Sequence[str], iou_threshold: float = 0.5,
                 use_07_metric: bool = True) -> VOCResult:
    """PASCAL VOC per-class AP and mAP (rules in the module docstring).

    Args:
        gt_records: annotated images; labels index ``class_names``.
        detections: image_id -> Detections; images missing from it have none.
            An image id that is not in ``gt_records`` is an error.
        class_names: the class names, in label order.
        iou_threshold: minimum IoU (inclusive) for a match.
        use_07_metric: VOC2007 11-point AP if True, else VOC2010+ area.
    Returns:
        VOCResult; classes without non-difficult ground truth have AP NaN and
        are excluded from the mAP.
    Raises:
        EvaluationInputError: duplicate or unknown image ids, labels out of range.
    """
    class_names = tuple(class_names)
    n_classes = len(class_names)
    gt = flatten_ground_truth(gt_records, n_classes)
    m = match_detections(gt_records, detections, gt, n_classes)
    gt_labels, gt_difficult = gt.labels, gt.difficult
    labels, scores, best_iou, best_gt = m.labels, m.scores, m.best_iou, m.best_gt
    n_pos = np.bincount(gt_labels[~gt_difficult], minlength=n_classes)

    ap, precision, recall, n_gt, n_det = {}, {}, {}, {}, {}
    for (c, name), order in zip(enumerate(class_names), rank_by_class(labels, scores, n_classes)):
        tp, fp = count_true_positives(best_iou[order], best_gt[order], gt_difficult, iou_threshold)
        n_gt[name], n_det[name] = int(n_pos[c]), int(len(order))
        if n_pos[c] == 0:
            ap[name], precision[name], recall[name] = math.nan, np.zeros(0), np.zeros(0)
            continue
        precision[name], recall[name] = precision_recall(tp, fp, n_pos[c])
        ap[name] = voc_ap(recall[name], precision[name], use_07_metric)
    defined = [v for v in ap.values() if not math.isnan(v)]
    return VOCResult(metric="voc07" if use_07_metric else "voc12", iou_threshold=float(iou_threshold),
                     class_names=class_names, ap=ap, precision=precision, recall=recall,
                     n_gt=n_gt, n_det=n_det,
                     mAP=float(np.mean(defined)) if defined else math.nan)
