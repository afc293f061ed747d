"""Confusion matrix over the classes plus background, at one score threshold and IoU.

Rows are the true class, columns the predicted class; the last row and
column are "background". Per image, the detections with score >= threshold
are matched one to one with the non-difficult ground-truth boxes, greedily
by decreasing score (ties keep input order), in two passes:

1. each detection takes the free box of its own class with the highest
   IoU >= ``iou_threshold``: a count on the diagonal;
2. each detection left takes the free box of another class with the highest
   IoU >= ``iou_threshold``: ``matrix[true, predicted]``.

A detection still left is ignored if it overlaps a difficult box by
``iou_threshold`` (as VOC ignores it), else it is a false positive on
background: ``matrix[background, predicted]``. A box no detection took is
missed: ``matrix[true, background]``. So row sums are the non-difficult
objects of each class, and the background cell is always 0.

Doing the own class first means an object found by its own class is never
also counted as confused; the diagonal then equals the true positives of the
VOC matching at that threshold, except where two boxes of a class overlap so
much that VOC's best-box rule counts a duplicate.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from detector.evaluation.pairs import image_pairs
from detector.evaluation.voc_ap import flatten_detections, flatten_ground_truth
from detector.records import Detections, ImageRecord

BACKGROUND = "background"


@dataclass(frozen=True)
class ConfusionMatrix:
    """``matrix[i, j]``: objects of class i (row; last = background) predicted as
    class j (column; last = background, i.e. missed). int64 [C + 1, C + 1]."""

    class_names: tuple[str, ...]  # the C object classes; "background" is appended in ``labels``
    matrix: np.ndarray
    score_threshold: float
    iou_threshold: float
    ignored: int  # detections on difficult boxes, left out

    @property
    def labels(self) -> tuple[str, ...]:
        return self.class_names + (BACKGROUND,)

    def to_dict(self) -> dict:
        return {"labels": list(self.labels), "rows": "true class", "columns": "predicted class",
                "score_threshold": self.score_threshold, "iou_threshold": self.iou_threshold,
                "ignored_detections": self.ignored, "matrix": self.matrix.tolist()}


def _greedy_pass(det: np.ndarray, gt: np.ndarray, iou: np.ndarray, det_free: list, gt_free: list
                 ) -> list[tuple[int, int]]:
    """Candidate pairs (det, gt, iou [P]; det = score rank) matched greedily: each
    detection in rank order takes its free box with the highest IoU (the first
    box on a tie, as argmax). Frees are updated in place; returns the pairs.

    Sorted by (detection, -IoU, box), a detection's first pair with a free box
    is its choice, so one pass over the pairs replays the greedy loop.
    """
    order = np.lexsort((gt, -iou, det))
    taken = []
    for d, g in zip(det[order].tolist(), gt[order].tolist()):
        if det_free[d] and gt_free[g]:
            det_free[d] = gt_free[g] = False
            taken.append((d, g))
    return taken


def confusion_matrix(gt_records: Sequence[ImageRecord], detections: Mapping[str, Detections],
                     class_names: Sequence[str], score_threshold: float,
                     iou_threshold: float = 0.5) -> ConfusionMatrix:
    """The confusion matrix of ``detections`` against ``gt_records`` (rules in the module docstring).

    Raises:
        EvaluationInputError: as ``evaluate_voc``.
    """
    class_names = tuple(class_names)
    bg = len(class_names)
    gt = flatten_ground_truth(gt_records, bg)
    image, _, boxes, labels, scores = flatten_detections(gt_records, detections, gt.index, bg)
    keep = np.flatnonzero(scores >= score_threshold)
    keep = keep[np.lexsort((-scores[keep], image[keep]))]  # per image by decreasing score, ties in input order
    d_labels = labels[keep]
    pairs = image_pairs(image[keep], boxes[keep], gt.offsets, gt.boxes)  # pairs.det: rank in keep
    hit = pairs.iou >= iou_threshold
    real = ~gt.difficult[pairs.gt]
    same = d_labels[pairs.det] == gt.labels[pairs.gt]
    det_free, gt_free = [True] * len(keep), (~gt.difficult).tolist()
    matrix = np.zeros((bg + 1, bg + 1), np.int64)
    # Own class first in every image, then the other classes: images are independent.
    for allowed in (hit & real & same, hit & real & ~same):
        taken = np.array(_greedy_pass(pairs.det[allowed], pairs.gt[allowed], pairs.iou[allowed], det_free,
                                      gt_free), np.int64).reshape(-1, 2)
        np.add.at(matrix, (gt.labels[taken[:, 1]], d_labels[taken[:, 0]]), 1)
    left = np.array(det_free, bool)
    on_difficult = np.zeros(len(keep), bool)
    on_difficult[pairs.det[hit & ~real]] = True
    ignored = int(np.sum(left & on_difficult))
    matrix[bg] += np.bincount(d_labels[left & ~on_difficult], minlength=bg + 1)
    matrix[:, bg] += np.bincount(gt.labels[np.array(gt_free, bool)], minlength=bg + 1)
    return ConfusionMatrix(class_names, matrix, float(score_threshold), float(iou_threshold), ignored)
