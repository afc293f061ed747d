"""detector/evaluation/pairs.py and the flat matching built on it, against per-image references."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from detector.boxes import box_iou
from detector.evaluation.pairs import first_max
from detector.evaluation.voc_ap import (EvaluationInputError, flatten_ground_truth, match_detections,
                                        rank_by_class)
from test_eval_voc import random_problem, rec


def test_first_max_is_argmax_per_group():
    rng = np.random.default_rng(0)
    group = np.sort(rng.choice([0, 1, 2, 4, 5], 40))  # group 3 and 6 have no values
    values = rng.integers(0, 4, 40).astype(np.float64)  # many ties
    values[group == 5] = -np.inf
    best, position = first_max(values, group, 7)
    for g in range(7):
        mine = np.flatnonzero(group == g)
        if g in (3, 5, 6):
            assert best[g] == -np.inf and position[g] == -1
        else:
            assert best[g] == values[mine].max() and position[g] == mine[np.argmax(values[mine])]
    assert first_max(np.zeros(0), np.zeros(0, np.int64), 2)[1].tolist() == [-1, -1]


def reference_matches(records, detections, n_classes):
    """best/other (IoU, flat gt) per detection: one IoU matrix per image, argmax per row."""
    offsets = np.cumsum([0] + [len(r.labels) for r in records])
    out = [[], [], [], []]
    for i, r in enumerate(records):
        d = detections.get(r.image_id)
        if d is None or not len(d):
            continue
        iou = box_iou(torch.from_numpy(d.boxes), torch.from_numpy(r.boxes)).numpy().astype(np.float64)
        same = d.labels[:, None] == r.labels[None, :]
        for k, mask in enumerate((same, ~same)):
            masked = np.where(mask, iou, -np.inf)
            j = masked.argmax(axis=1) if len(r.labels) else np.zeros(len(d), np.int64)
            value = masked[np.arange(len(d)), j] if len(r.labels) else np.full(len(d), -np.inf)
            out[2 * k].append(value)
            out[2 * k + 1].append(np.where(np.isfinite(value), offsets[i] + j, -1))
    return [np.concatenate(c) for c in out]


@pytest.mark.parametrize("seed", range(6))
def test_flat_matching_equals_one_iou_matrix_per_image(seed):
    records, detections, names = random_problem(seed)
    records[1] = rec(records[1].image_id, [[0, 0, 10, 10]] * 3, [0, 1, 0])  # IoU ties: the first box wins
    detections[records[1].image_id] = next(d for d in detections.values() if len(d))
    m = match_detections(records, detections, flatten_ground_truth(records, len(names)), len(names))
    best_iou, best_gt, other_iou, other_gt = reference_matches(records, detections, len(names))
    np.testing.assert_array_equal(m.best_iou, best_iou)
    np.testing.assert_array_equal(m.best_gt, best_gt)
    np.testing.assert_array_equal(m.other_iou, other_iou)
    np.testing.assert_array_equal(m.other_gt, other_gt)


def test_rank_by_class_is_a_stable_sort_per_class():
    rng = np.random.default_rng(1)
    labels, scores = rng.integers(0, 4, 200), rng.integers(0, 5, 200).astype(np.float64)
    for c, order in enumerate(rank_by_class(labels, scores, 5)):
        mine = np.flatnonzero(labels == c)
        np.testing.assert_array_equal(order, mine[np.argsort(-scores[mine], kind="stable")])


def test_the_first_bad_record_is_blamed():
    good, bad_label = rec("a", [[0, 0, 1, 1]], [0]), rec("b", [[0, 0, 1, 1]], [7])
    with pytest.raises(EvaluationInputError, match="'b': ground-truth label out of range"):
        flatten_ground_truth([good, bad_label, good], 3)
    with pytest.raises(EvaluationInputError, match="'a' appears twice"):
        flatten_ground_truth([good, good, bad_label], 3)
