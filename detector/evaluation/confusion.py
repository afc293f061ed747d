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
import torch

from detector.boxes import box_iou
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


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return box_iou(torch.from_numpy(np.ascontiguousarray(a, np.float32)),
                   torch.from_numpy(np.ascontiguousarray(b, np.float32))).numpy()


def _greedy_pass(iou: np.ndarray, allowed: np.ndarray, det_free: np.ndarray, gt_free: np.ndarray,
                 threshold: float) -> list[tuple[int, int]]:
    """Detections (rows, in score order) take the best free allowed box; returns the pairs."""
    pairs = []
    for d in np.flatnonzero(det_free):
        cand = np.where(allowed[d] & gt_free & (iou[d] >= threshold), iou[d], -1.0)
        if cand.size and cand.max() >= 0:
            g = int(cand.argmax())
            pairs.append((int(d), g))
            det_free[d], gt_free[g] = False, False
    return pairs


def confusion_matrix(gt_records: Sequence[ImageRecord], detections: Mapping[str, Detections],
                     class_names: Sequence[str], score_threshold: float,
                     iou_threshold: float = 0.5) -> ConfusionMatrix:
    """The confusion matrix of ``detections`` against ``gt_records`` (rules in the module docstring)."""
    class_names = tuple(class_names)
    bg = len(class_names)
    matrix = np.zeros((bg + 1, bg + 1), np.int64)
    ignored = 0
    for rec in gt_records:
        det = detections.get(rec.image_id, Detections())
        keep = np.flatnonzero(det.scores >= score_threshold)
        keep = keep[np.argsort(-det.scores[keep], kind="stable")]
        d_boxes, d_labels = det.boxes[keep], det.labels[keep].astype(np.int64)
        real = ~rec.difficult
        g_boxes, g_labels = rec.boxes[real], rec.labels[real].astype(np.int64)
        iou = _iou(d_boxes, g_boxes)
        det_free, gt_free = np.ones(len(keep), bool), np.ones(len(g_labels), bool)
        same = d_labels[:, None] == g_labels[None, :]
        for d, g in _greedy_pass(iou, same, det_free, gt_free, iou_threshold):
            matrix[g_labels[g], d_labels[d]] += 1
        for d, g in _greedy_pass(iou, ~same, det_free, gt_free, iou_threshold):
            matrix[g_labels[g], d_labels[d]] += 1
        on_difficult = (_iou(d_boxes, rec.boxes[~real]) >= iou_threshold).any(axis=1) \
            if (~real).any() else np.zeros(len(keep), bool)
        ignored += int(np.sum(det_free & on_difficult))
        np.add.at(matrix[bg], d_labels[det_free & ~on_difficult], 1)
        np.add.at(matrix[:, bg], g_labels[gt_free], 1)
    return ConfusionMatrix(class_names, matrix, float(score_threshold), float(iou_threshold), ignored)
