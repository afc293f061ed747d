"""Tests of detector.evaluation.errors and .matching: false-positive kinds, misses, fix gains.

The hand-built case (classes cat, dog; AP by the VOC 2010+ area):

image a: gt cat A, dog B. Detections: cat on A 0.9 (tp), cat on A 0.8
  (duplicate), dog on A 0.7 (confusion: IoU 1 with a cat), cat half on A 0.6
  (localisation, IoU 1/3), cat far away 0.5 (background), cat near B 0.4
  (confusion: IoU 0.39 with a dog, none with a cat), dog on B 0.3 (tp).
image b: gt cat D, difficult. cat on D 0.95 (ignored).
image c: gt dog E (40 x 40, medium). cat on E 0.9 (confusion); E is never found.

cat: one positive, found first: AP 1. dog: positives B and E; ranking dog 0.7
(fp), dog 0.3 (tp): AP = 0.5 recall x 0.5 precision = 0.25. mAP 0.625.
Fixing confusion removes dog 0.7: dog AP 0.5, mAP 0.75. Fixing misses removes
E from the positives: dog AP 0.5, mAP 0.75. The other kinds cost nothing.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from detector.evaluation.errors import analyse_errors, count_until_recall, detection_kinds, kind_codes
from detector.evaluation.matching import class_aps, match_records, mean_ap
from detector.evaluation.voc_ap import evaluate_voc
from test_eval_voc import det, random_problem, rec

NAMES = ("cat", "dog")
A, B, D, E = [0, 0, 10, 10], [50, 50, 70, 70], [0, 0, 20, 20], [0, 0, 40, 40]


def hand_case():
    records = [rec("a", [A, B], [0, 1]), rec("b", [D], [0], [True]), rec("c", [E], [1])]
    detections = {
        "a": det([A, A, A, [0, 0, 10, 30], [80, 0, 90, 10], [55, 55, 75, 75], B],
                 [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3], [0, 0, 1, 0, 0, 0, 1]),
        "b": det([D], [0.95], [0]),
        "c": det([E], [0.9], [0]),
    }
    return records, detections


def test_kind_of_each_detection():
    records, detections = hand_case()
    kinds = detection_kinds(match_records(records, detections, NAMES))
    assert list(kinds) == ["tp", "duplicate", "confusion", "localisation", "background", "confusion",
                           "tp", "ignored", "confusion"]


def test_counts_misses_and_gains():
    records, detections = hand_case()
    e = analyse_errors(match_records(records, detections, NAMES), score_threshold=0.65, use_07_metric=False)
    assert e.fp_total == {"localisation": 1, "duplicate": 1, "confusion": 3, "background": 1}
    assert e.fp_at_threshold == {"localisation": 0, "duplicate": 1, "confusion": 2, "background": 0}
    assert e.fp_by_class == {"cat": {"localisation": 0, "duplicate": 1, "confusion": 1, "background": 0},
                             "dog": {"localisation": 0, "duplicate": 0, "confusion": 1, "background": 0}}
    assert e.n_gt_by_size == {"small": 2, "medium": 1, "large": 0}  # A, B; E (difficult D left out)
    assert e.missed_total == {"small": 0, "medium": 1, "large": 0}  # E
    assert e.missed_at_threshold == {"small": 1, "medium": 1, "large": 0}  # B found only at 0.3
    assert e.mAP == pytest.approx(0.625)
    assert e.mAP == pytest.approx(evaluate_voc(records, detections, NAMES, use_07_metric=False).mAP)
    assert e.map_gain == pytest.approx({"localisation": 0, "duplicate": 0, "confusion": 0.125,
                                        "background": 0, "missed": 0.125})
    # dog never reaches recall 0.6 (1 of 2): its one confusion counts at every recall.
    assert e.walk["confusion"] == [1] * 10 and e.walk["duplicate"] == [0] * 10
    d = e.to_dict()
    assert d["mAP_gain_if_fixed"]["confusion"] == pytest.approx(0.125) and len(d["walk"]["recall"]) == 10


def test_count_until_recall_stops_at_the_detection_that_reaches_it():
    kinds = np.array(["background", "tp", "duplicate", "tp", "localisation"], dtype=object)
    tp = kinds == "tp"
    assert count_until_recall(kinds, tp, 2, 0.5) == {"localisation": 0, "duplicate": 0, "confusion": 0,
                                                     "background": 1}
    assert count_until_recall(kinds, tp, 2, 1.0)["duplicate"] == 1
    assert count_until_recall(kinds, tp, 3, 1.0)["localisation"] == 1  # never reached: all
    assert sum(count_until_recall(kinds, tp, 0, 0.5).values()) == 0  # no objects: AP leaves the class out


def test_empty_input():
    records = [rec("a", [A], [0])]
    e = analyse_errors(match_records(records, {}, NAMES), 0.0)
    assert sum(e.fp_total.values()) == 0 and e.missed_total["small"] == 1
    assert e.mAP == 0.0 and e.map_gain["missed"] == 0.0


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("use07", [True, False])
def test_ap_from_matches_equals_evaluate_voc(seed, use07):
    records, detections, names = random_problem(seed)
    matched = match_records(records, detections, names)
    aps = class_aps(matched, use07)
    ref = evaluate_voc(records, detections, names, use_07_metric=use07)
    for name, ap in zip(names, aps):
        assert (math.isnan(ap) and math.isnan(ref.ap[name])) or ap == pytest.approx(ref.ap[name], abs=1e-12)
    assert mean_ap(aps) == pytest.approx(ref.mAP, abs=1e-12)
    kinds = detection_kinds(matched)
    assert int(np.sum(kinds == "tp")) == int(matched.tp.sum())
    # Removing every false positive leaves precision 1 wherever a class has hits.
    fixed = class_aps(matched, use07, drop=matched.fp)
    assert all(f >= a - 1e-12 for f, a in zip(fixed, aps) if not math.isnan(a))


def test_count_until_recall_takes_kind_codes_too():
    records, detections = hand_case()
    matched = match_records(records, detections, NAMES)
    names, codes, tp = detection_kinds(matched), kind_codes(matched), matched.tp
    for n_pos, recall in ((3, 0.5), (3, 1.0), (1, 0.3)):
        assert count_until_recall(codes, tp, n_pos, recall) == count_until_recall(names, tp, n_pos, recall)
