"""Tests of detector.evaluation.confusion on the hand-built case of test_eval_errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from detector.boxes import box_iou
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


def reference_confusion(records, detections, n_classes, score_threshold, iou_threshold):
    """The matrix and ignored count by the module docstring's rules, image by image and
    detection by detection (the loop the vectorised confusion_matrix replaced)."""
    bg = n_classes
    matrix, ignored = np.zeros((bg + 1, bg + 1), np.int64), 0
    for r in records:
        d = detections.get(r.image_id, det([], [], []))
        keep = np.flatnonzero(d.scores >= score_threshold)
        keep = keep[np.argsort(-d.scores[keep], kind="stable")]
        real = ~r.difficult
        iou = box_iou(torch.from_numpy(d.boxes[keep]), torch.from_numpy(r.boxes)).numpy()
        det_free, gt_free = np.ones(len(keep), bool), real.copy()
        for own in (True, False):
            for k in range(len(keep)):
                if not det_free[k]:
                    continue
                label = d.labels[keep[k]]
                allowed = gt_free & ((r.labels == label) if own else (r.labels != label))
                cand = np.where(allowed & (iou[k] >= iou_threshold), iou[k], -1.0)
                if cand.size and cand.max() >= 0:
                    g = int(cand.argmax())
                    matrix[r.labels[g], label] += 1
                    det_free[k], gt_free[g] = False, False
        for k in np.flatnonzero(det_free):
            if np.any(~real & (iou[k] >= iou_threshold)):
                ignored += 1
            else:
                matrix[bg, d.labels[keep[k]]] += 1
        np.add.at(matrix[:, bg], r.labels[gt_free], 1)
    return matrix, ignored


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("score_threshold, iou_threshold", [(0.3, 0.5), (0.0, 0.7), (0.7, 0.3)])
def test_vectorised_matrix_equals_the_greedy_loop(seed, score_threshold, iou_threshold):
    records, detections, names = random_problem(seed)
    # Copies of a box, of its class and of the next, tie on IoU, also for a detection
    # of a third class on that box: the first box must win.
    for i in range(0, len(records), 3):
        r = records[i]
        if len(r.labels):
            label = int(r.labels[0])
            records[i] = rec(r.image_id, np.r_[r.boxes, r.boxes[:1], r.boxes[:1]],
                             np.r_[r.labels, label, (label + 1) % len(names)], np.r_[r.difficult, False, False])
            d = detections.get(r.image_id, det([], [], []))
            detections[r.image_id] = det(np.r_[d.boxes, r.boxes[:1]], np.r_[d.scores, 0.75],
                                         np.r_[d.labels, (label + 2) % len(names)])
    cm = confusion_matrix(records, detections, names, score_threshold, iou_threshold)
    matrix, ignored = reference_confusion(records, detections, len(names), score_threshold, iou_threshold)
    np.testing.assert_array_equal(cm.matrix, matrix)
    assert cm.ignored == ignored
