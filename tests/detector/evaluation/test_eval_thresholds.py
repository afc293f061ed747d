"""Tests of detector.evaluation.thresholds: F1 against threshold, against evaluate_voc per threshold."""
from __future__ import annotations

import math

import numpy as np
import pytest

from detector.evaluation.matching import match_records
from detector.evaluation.thresholds import ALL_CLASSES, f1_curve, f1_curves
from detector.evaluation.voc_ap import evaluate_voc
from detector.records import Detections
from test_eval_voc import random_problem, rec


def test_hand_curve_ties_and_best():
    # Scores 0.9 (tp), 0.8 (fp), 0.8 (tp), 0.5 (ignored), 0.2 (fp); 3 objects.
    scores = np.array([0.9, 0.8, 0.8, 0.5, 0.2])
    tp = np.array([1, 0, 1, 0, 0], bool)
    counted = np.array([1, 1, 1, 0, 1], bool)
    c = f1_curve(scores, tp, counted, 3)
    np.testing.assert_allclose(c.thresholds, [0.9, 0.8, 0.5, 0.2])
    np.testing.assert_allclose(c.precision, [1, 2 / 3, 2 / 3, 0.5])
    np.testing.assert_allclose(c.recall, [1 / 3, 2 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(c.f1, [0.5, 2 / 3, 2 / 3, 4 / 7])
    assert c.best_threshold == 0.8 and c.best_f1 == pytest.approx(2 / 3)  # highest of the tied best
    assert c.summary()["precision"] == pytest.approx(2 / 3)


def test_degenerate_curves():
    assert math.isnan(f1_curve(np.zeros(0), np.zeros(0, bool), np.zeros(0, bool), 0).best_f1)
    none_found = f1_curve(np.array([0.5]), np.array([False]), np.array([True]), 2)
    assert none_found.best_f1 == 0 and math.isnan(none_found.best_threshold)


def brute_force_f1(records, detections, names, t):
    """F1 from evaluate_voc on only the detections scored >= t."""
    kept = {k: Detections(d.boxes[d.scores >= t], d.scores[d.scores >= t], d.labels[d.scores >= t])
            for k, d in detections.items()}
    r = evaluate_voc(records, kept, names)
    tp = sum(round(r.recall[c][-1] * r.n_gt[c]) for c in names if len(r.recall[c]))
    return tp, sum(r.n_det.values()), sum(r.n_gt.values())


@pytest.mark.parametrize("seed", range(3))
def test_pooled_curve_against_evaluate_voc(seed):
    records, detections, names = random_problem(seed)
    # No difficult boxes, so every detection kept counts.
    records = [rec(r.image_id, r.boxes, r.labels) for r in records]
    curve = f1_curves(match_records(records, detections, names))[ALL_CLASSES]
    for t, p, r in zip(curve.thresholds, curve.precision, curve.recall):
        tp, counted, n_gt = brute_force_f1(records, detections, names, t)
        assert r == pytest.approx(tp / n_gt)
        assert p == pytest.approx(tp / counted)
