"""VOC matching of every detection, kept per detection for the analyses.

:func:`evaluate_voc` reduces the matching to one precision/recall curve per
class. The error analysis, the F1 curves and AP by object size need the
outcome of each detection instead (true positive, false positive or ignored,
and the boxes it overlaps); :func:`match_records` gives it, with exactly the
rules of :mod:`detector.evaluation.voc_ap` (same IoU, same stable ranking,
same handling of difficult boxes), so AP computed from it equals
``evaluate_voc``'s.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import numpy as np

from detector.evaluation.voc_ap import (DetectionMatches, count_true_positives, flatten_ground_truth,
                                        match_detections, precision_recall, rank_by_class, voc_ap)
from detector.records import Detections, ImageRecord


@dataclass(frozen=True)
class MatchedDetections:
    """The VOC outcome of every detection (flat, in :class:`DetectionMatches` order).

    A detection is a true positive, ignored (its best box is ignored ground
    truth and the IoU reaches the threshold) or else a false positive.
    """

    class_names: tuple[str, ...]
    iou_threshold: float
    matches: DetectionMatches
    det_boxes: np.ndarray  # float32 [D, 4], the detections' boxes in the same order
    tp: np.ndarray  # bool [D]
    ignored: np.ndarray  # bool [D]
    gt_boxes: np.ndarray  # float32 [G, 4], all records' boxes concatenated
    gt_labels: np.ndarray  # int64 [G]
    gt_ignored: np.ndarray  # bool [G]: difficult (or outside the evaluated range)
    gt_image: np.ndarray  # int64 [G] index into the records
    rankings: tuple[np.ndarray, ...]  # per class: what ranking(c) returns, sorted once

    @property
    def fp(self) -> np.ndarray:
        """bool [D]: counted false positives."""
        return ~self.tp & ~self.ignored

    def ranking(self, label: int) -> np.ndarray:
        """int64 indices of the detections of class ``label``, by decreasing score
        (stable: ties keep image then input order, as AP ranks them)."""
        return self.rankings[label]

    def n_positives(self, label: int) -> int:
        """Non-ignored ground-truth boxes of class ``label``."""
        return int(np.sum((self.gt_labels == label) & ~self.gt_ignored))


def match_records(gt_records: Sequence[ImageRecord], detections: Mapping[str, Detections],
                  class_names: Sequence[str], iou_threshold: float = 0.5,
                  gt_ignored: np.ndarray | None = None) -> MatchedDetections:
    """Match every detection to the ground truth by the VOC rules.

    Args:
        gt_records, detections, class_names, iou_threshold: as for ``evaluate_voc``.
        gt_ignored: optional bool [G] over the concatenated boxes, ignored
            boxes beside the difficult ones (AP by size ignores boxes outside
            its range this way).
    Raises:
        EvaluationInputError: as ``evaluate_voc``.
    """
    class_names = tuple(class_names)
    gt = flatten_ground_truth(gt_records, len(class_names))
    m = match_detections(gt_records, detections, gt, len(class_names))
    gt_image = np.repeat(np.arange(len(gt_records)), np.diff(gt.offsets))
    rankings = tuple(rank_by_class(m.labels, m.scores, len(class_names)))
    matched = MatchedDetections(class_names, float(iou_threshold), m, m.boxes, np.zeros(0, bool),
                                np.zeros(0, bool), gt.boxes, gt.labels, gt.difficult, gt_image, rankings)
    return with_ignored(matched, gt.difficult if gt_ignored is None else gt.difficult | np.asarray(gt_ignored, bool))


def with_ignored(matched: MatchedDetections, gt_ignored: np.ndarray) -> MatchedDetections:
    """``matched`` with the outcomes recounted for another set of ignored boxes
    (bool [G], difficult included): the overlaps are reused, not recomputed."""
    m = matched.matches
    tp = np.zeros(len(m.labels), bool)
    ignored = np.zeros(len(m.labels), bool)
    for c in range(len(matched.class_names)):
        order = matched.ranking(c)
        t, f = count_true_positives(m.best_iou[order], m.best_gt[order], gt_ignored, matched.iou_threshold)
        tp[order] = t > 0
        ignored[order] = (t == 0) & (f == 0)
    return replace(matched, tp=tp, ignored=ignored, gt_ignored=gt_ignored)


def ranked_ap(tp: np.ndarray, fp: np.ndarray, n_pos: int, use_07_metric: bool) -> float:
    """AP of one class from its ranked 0/1 flags tp, fp [D]; NaN when ``n_pos`` is 0."""
    if n_pos == 0:
        return math.nan
    precision, recall = precision_recall(np.asarray(tp, np.float64), np.asarray(fp, np.float64), n_pos)
    return voc_ap(recall, precision, use_07_metric)


def mean_ap(aps: Sequence[float]) -> float:
    """Mean over the defined (non-NaN) APs; NaN if none is."""
    defined = [a for a in aps if not math.isnan(a)]
    return float(np.mean(defined)) if defined else math.nan


def class_aps(matched: MatchedDetections, use_07_metric: bool, drop: np.ndarray | None = None,
              n_pos_less: np.ndarray | None = None) -> list[float]:
    """AP per class (NaN without positives), optionally after fixing errors:
    ``drop`` (bool [D]) removes those false positives from the ranking and
    ``n_pos_less`` (int [C]) removes that many objects from each class's positives."""
    aps = []
    for c in range(len(matched.class_names)):
        order = matched.ranking(c)
        fp = matched.fp[order] & (True if drop is None else ~drop[order])
        n_pos = matched.n_positives(c) - (0 if n_pos_less is None else int(n_pos_less[c]))
        # Removing every object of a class leaves its AP undefined; it keeps its AP instead.
        if n_pos <= 0:
            n_pos, fp = matched.n_positives(c), matched.fp[order]
        aps.append(ranked_ap(matched.tp[order], fp, n_pos, use_07_metric))
    return aps
