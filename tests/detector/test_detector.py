"""Detector.postprocess on hand-built scores: threshold, clipping, per-class NMS, the cap."""
import dataclasses

import numpy as np
import pytest
import torch

from detector.config import load_detector_config
from detector.inference.detector import Detector, ScoredWindows


class FixedShift:
    """A stand-in for BoxRegressors: moves every box right by ``dx`` px."""

    def __init__(self, dx):
        self.dx = dx

    def apply(self, features, boxes, labels):
        return boxes + np.array([self.dx, 0, self.dx, 0], np.float32)


class _NoFeatures:
    """postprocess reads no features; the constructor only puts the backbone in eval mode."""

    backbone = torch.nn.Identity()


def detector(regressors=None, **test):
    cfg = load_detector_config()
    return Detector(features=_NoFeatures(), head=torch.nn.Identity(), svms=None,
                    regressors=regressors, class_names=("a", "b"),
                    test=dataclasses.replace(cfg.test, **test), svm_feature="fc7",
                    proposals=cfg.proposals)


def scored(boxes, scores, width=100, height=80):
    boxes = torch.tensor(boxes, dtype=torch.float32)
    return ScoredWindows(boxes, torch.zeros(len(boxes), 4), torch.tensor(scores, dtype=torch.float32),
                         width, height)


BOXES = [[0, 0, 40, 40], [2, 2, 42, 42], [60, 10, 90, 70], [50, 50, 120, 100]]
SCORES = [[2.0, -3.0], [1.0, 0.5], [-2.0, 0.8], [0.3, -3.0]]


def test_threshold_nms_per_class_and_clipping():
    det = detector(score_threshold=-1.5, nms_iou=0.3).postprocess(scored(BOXES, SCORES))
    got = sorted(zip(det.labels.tolist(), np.round(det.scores.astype(float), 3).tolist(), det.boxes.tolist()))
    # class a: box 1 (IoU 0.82 with box 0) is suppressed; box 3 is clipped to the 100 x 80 image.
    # class b: box 1 (0.5) and box 2 (0.8) do not overlap; -3.0 is under the threshold.
    assert got == [(0, 0.3, [50, 50, 100, 80]), (0, 2.0, [0, 0, 40, 40]),
                   (1, 0.5, [2, 2, 42, 42]), (1, 0.8, [60, 10, 90, 70])]
    assert det.scores.tolist() == sorted(det.scores.tolist(), reverse=True)


def test_cap_keeps_the_best_detections():
    det = detector(score_threshold=-1.5, max_per_image=2).postprocess(scored(BOXES, SCORES))
    assert det.scores.tolist() == pytest.approx([2.0, 0.8])


def test_regression_applied_unless_asked_not_to():
    d = detector(FixedShift(5.0), score_threshold=1.5)
    moved = d.postprocess(scored(BOXES, SCORES))
    plain = d.postprocess(scored(BOXES, SCORES), regress=False)
    assert moved.boxes.tolist() == [[5, 0, 45, 40]] and plain.boxes.tolist() == [[0, 0, 40, 40]]


def test_nothing_above_threshold_gives_empty_detections():
    det = detector(score_threshold=10.0).postprocess(scored(BOXES, SCORES))
    assert len(det) == 0 and det.boxes.shape == (0, 4)


def scored_grid(n):
    """n disjoint windows (NMS suppresses none); class 0 scores higher than class 1."""
    windows = torch.tensor([[20.0 * i, 0, 20.0 * i + 10, 10] for i in range(n)])
    scores = torch.stack([torch.linspace(1.0, 0.5, n), torch.linspace(0.4, 0.0, n)], dim=1)
    return ScoredWindows(windows, torch.zeros(n, 8), scores, 20 * n, 20)


def test_postprocess_caps_detections_per_class_then_per_image():
    scored = scored_grid(150)
    # Official default: 100 per class per image, no overall cap.
    dets = detector(score_threshold=-1.5).postprocess(scored)
    assert (dets.labels == 0).sum() == 100 and (dets.labels == 1).sum() == 100
    assert dets.scores.tolist() == sorted(dets.scores.tolist(), reverse=True)
    # An overall cap of 100 (py-faster-rcnn) keeps the best 100 over both classes.
    dets = detector(score_threshold=-1.5, max_per_image=100).postprocess(scored)
    assert len(dets.labels) == 100 and (dets.labels == 0).all()
    # No caps at all.
    dets = detector(score_threshold=-1.5, max_per_class=0).postprocess(scored)
    assert len(dets.labels) == 300
