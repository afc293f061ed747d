"""Tests of detector.evaluation.size_ap: COCO's size ranges under the VOC rules."""
from __future__ import annotations

import math

import numpy as np
import pytest

from detector.evaluation.size_ap import evaluate_voc_by_size, size_of
from detector.evaluation.voc_ap import evaluate_voc
from test_eval_voc import det, random_problem, rec

S, L = [0, 0, 10, 10], [100, 100, 200, 200]  # areas 100 (small) and 10000 (large)


def test_size_of_boundaries():
    np.testing.assert_array_equal(size_of(np.array([0, 1023.9, 1024, 9215, 9216, 1e9])), [0, 0, 1, 1, 2, 2])


def test_out_of_range_truth_and_unmatched_detections_are_ignored():
    records = [rec("a", [S, L], [0, 0])]
    detections = {"a": det([L, [50, 0, 60, 10], S], [0.9, 0.8, 0.7], [0, 0, 0])}
    r = evaluate_voc_by_size(records, detections, ("cat",), use_07_metric=False)
    # large: S ignored; the det on S matches an ignored box, the small false positive is out of range.
    assert r.ap["large"]["cat"] == pytest.approx(1.0)
    # small: L ignored, the det on L too; the small false positive ranks above the det on S.
    assert r.ap["small"]["cat"] == pytest.approx(0.5)
    assert math.isnan(r.ap["medium"]["cat"]) and math.isnan(r.mAP["medium"])
    assert r.n_gt == {"small": {"cat": 1}, "medium": {"cat": 0}, "large": {"cat": 1}}
    assert r.to_dict()["mAP"]["medium"] is None


def shrink(boxes):
    """Boxes cut to at most 30 x 30 pixels: all small (area < 32 ** 2)."""
    return np.minimum(boxes, np.tile(boxes[:, :2], 2) + 30).astype(np.float32)


@pytest.mark.parametrize("seed", range(3))
def test_small_range_holding_everything_equals_evaluate_voc(seed):
    records, detections, names = random_problem(seed)
    small = [rec(r.image_id, shrink(r.boxes), r.labels, r.difficult) for r in records]
    dets = {k: det(shrink(d.boxes), d.scores, d.labels) for k, d in detections.items()}
    r = evaluate_voc_by_size(small, dets, names)
    ref = evaluate_voc(small, dets, names)
    for c in names:
        assert (math.isnan(ref.ap[c]) and math.isnan(r.ap["small"][c])) or \
            r.ap["small"][c] == pytest.approx(ref.ap[c], abs=1e-12)
    assert math.isnan(r.mAP["medium"]) and math.isnan(r.mAP["large"])
