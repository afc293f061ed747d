"""Tests of detector.evaluation.confusion on the hand-built case of test_eval_errors."""
from __future__ import annotations

import numpy as np

from detector.evaluation.confusion import confusion_matrix
from test_eval_errors import NAMES, hand_case
from test_eval_voc import det, random_problem, rec


def test_hand_case_at_threshold():
    records, detections = hand_case()
    cm = confusion_matrix(records, detections, NAMES, score_threshold=0.65)
    # Rows cat, dog, background (true); columns cat, dog, background (predicted).
    # cat 0.9 finds A; cat 0.8 (duplicate) and dog 0.7 (A already taken) are background;
    # dog B only found at 0.3: missed; dog E taken by cat 0.9; cat 0.95 on difficult D: ignored.
    np.testing.assert_array_equal(cm.matrix, [[1, 0, 0],
                                              [1, 0, 1],
                                              [1, 1, 0]])
    assert cm.ignored == 1
    assert cm.to_dict()["labels"] == ["cat", "dog", "background"]


def test_own_class_first_then_other_class():
    # One dog box; a higher-scored cat on it and a dog on it: the dog is found, the cat is background.
    records = [rec("a", [[0, 0, 10, 10]], [1])]
    detections = {"a": det([[0, 0, 10, 10], [0, 0, 10, 10]], [0.9, 0.5], [0, 1])}
    cm = confusion_matrix(records, detections, ("cat", "dog"), 0.0)
    np.testing.assert_array_equal(cm.matrix, [[0, 0, 0], [0, 1, 0], [1, 0, 0]])
    # Below the threshold the dog detection is gone: the cat takes the dog box.
    cm = confusion_matrix(records, detections, ("cat", "dog"), 0.6)
    np.testing.assert_array_equal(cm.matrix, [[0, 0, 0], [1, 0, 0], [0, 0, 0]])


def test_empty_input():
    cm = confusion_matrix([rec("a", [[0, 0, 10, 10]], [0])], {}, ("cat",), 0.0)
    np.testing.assert_array_equal(cm.matrix, [[0, 1], [0, 0]])


def test_row_and_column_sums_on_random_data():
    for seed in range(4):
        records, detections, names = random_problem(seed)
        cm = confusion_matrix(records, detections, names, score_threshold=0.3)
        n = len(names)
        gt = np.bincount(np.concatenate([r.labels[~r.difficult] for r in records]), minlength=n)
        np.testing.assert_array_equal(cm.matrix[:n].sum(axis=1), gt)
        kept = np.concatenate([d.labels[d.scores >= 0.3] for d in detections.values()])
        assert cm.matrix[:, :n].sum() + cm.ignored == len(kept)
        assert cm.matrix[n, n] == 0
