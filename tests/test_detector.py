"""Tests for detector/detector.py: the post-processing caps."""
import torch

from detector.backbones import build_backbone
from detector.config import load_detector_config
from detector.detector import Detector, ScoredWindows
from detector.heads import FCHead


def make_detector(overrides):
    cfg = load_detector_config(None, ["backbone.name=tiny", "bbox.enabled=false", *overrides])
    backbone = build_backbone("tiny")
    return Detector(cfg, ["a", "b"], backbone, FCHead(8, 4, 2, 0.0), svms=None)


def scored_grid(n):
    """n disjoint windows (NMS suppresses none); class 0 scores higher than class 1."""
    windows = torch.tensor([[20.0 * i, 0, 20.0 * i + 10, 10] for i in range(n)])
    scores = torch.stack([torch.linspace(1.0, 0.5, n), torch.linspace(0.4, 0.0, n)], dim=1)
    return ScoredWindows(windows, torch.zeros(n, 8), scores, 20 * n, 20)


def test_postprocess_caps_detections_per_class_then_per_image():
    scored = scored_grid(150)
    # Official default: 100 per class per image, no overall cap.
    dets = make_detector([]).postprocess(scored)
    assert (dets.labels == 0).sum() == 100 and (dets.labels == 1).sum() == 100
    assert dets.scores.tolist() == sorted(dets.scores.tolist(), reverse=True)
    # An overall cap of 100 (py-faster-rcnn) keeps the best 100 over both classes.
    dets = make_detector(["test.max_per_image=100"]).postprocess(scored)
    assert len(dets.labels) == 100 and (dets.labels == 0).all()
    # No caps at all.
    dets = make_detector(["test.max_per_class=0"]).postprocess(scored)
    assert len(dets.labels) == 300
