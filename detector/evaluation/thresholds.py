"""F1 against the score threshold, per class and over all classes, and the best threshold.

Keeping the detections with score >= t gives a precision P(t) and a recall
R(t) under the VOC matching (:mod:`detector.evaluation.matching`; detections
on difficult boxes count neither way), and F1(t) = 2 P R / (P + R). The
curve is evaluated at each distinct score (a threshold between two scores
keeps the same detections); the best threshold is the one with the highest
F1, the highest such score on a tie (fewest detections kept).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from detector.evaluation.matching import MatchedDetections

ALL_CLASSES = "all classes"  # the key of the pooled curve


@dataclass(frozen=True)
class F1Curve:
    """F1 at each candidate threshold (decreasing), and the best point."""

    thresholds: np.ndarray  # float64 [T], distinct scores, decreasing
    precision: np.ndarray  # float64 [T]
    recall: np.ndarray  # float64 [T]
    f1: np.ndarray  # float64 [T]
    best_threshold: float  # NaN when there is no detection or no object
    best_f1: float  # 0 when nothing is found; NaN when there is no object

    def summary(self) -> dict:
        nan_none = lambda x: None if math.isnan(x) else float(x)
        i = int(np.argmax(self.thresholds == self.best_threshold)) if len(self.f1) else None
        return {"best_threshold": nan_none(self.best_threshold), "best_f1": nan_none(self.best_f1),
                "precision": None if i is None or math.isnan(self.best_threshold) else float(self.precision[i]),
                "recall": None if i is None or math.isnan(self.best_threshold) else float(self.recall[i])}


def f1_curve(scores: np.ndarray, tp: np.ndarray, counted: np.ndarray, n_pos: int,
             order: np.ndarray | None = None) -> F1Curve:
    """F1 against threshold from detections' scores [D], true-positive flags [D],
    counted flags [D] (False for ignored detections) and the number of objects;
    ``order``: the detections by decreasing score, if already sorted (stable)."""
    order = np.argsort(-scores, kind="stable") if order is None else order
    s = scores[order].astype(np.float64)
    tp_c = np.cumsum(tp[order].astype(np.float64))
    n_c = np.cumsum(counted[order].astype(np.float64))
    # The last detection of each run of equal scores: threshold t = that score keeps all of them.
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True]) if len(s) else np.zeros(0, np.int64)
    tp_c, n_c, thresholds = tp_c[last], n_c[last], s[last]
    precision = np.where(n_c > 0, tp_c / np.maximum(n_c, 1), 0.0)
    recall = tp_c / n_pos if n_pos else np.zeros_like(tp_c)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-300), 0.0)
    if n_pos == 0:
        return F1Curve(thresholds, precision, recall, f1, math.nan, math.nan)
    if not len(f1) or f1.max() == 0:
        return F1Curve(thresholds, precision, recall, f1, math.nan, 0.0)
    best = int(np.argmax(f1))  # first maximum = the highest threshold
    return F1Curve(thresholds, precision, recall, f1, float(thresholds[best]), float(f1[best]))


def f1_curves(matched: MatchedDetections) -> dict[str, F1Curve]:
    """F1 curves per class name, and pooled over all classes under ALL_CLASSES."""
    m = matched.matches
    counted = ~matched.ignored
    curves = {}
    for c, name in enumerate(matched.class_names):
        curves[name] = f1_curve(m.scores, matched.tp, counted, matched.n_positives(c), matched.ranking(c))
    curves[ALL_CLASSES] = f1_curve(m.scores, matched.tp, counted, int(np.sum(~matched.gt_ignored)))
    return curves
