"""The trained detector: the whole test-time pipeline reads in one place.

``windows -> conv5 maps -> pool -> fc -> SVM scores -> box regression -> NMS``
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .backbones import Backbone
from .bbox_regression import BoxRegressors
from .boxes import as_box_tensor, batched_nms, clip_boxes
from .config import Config
from .features import compute_feature_maps
from .heads import FCHead
from .pooling import SpatialPyramidPool
from .records import Detections
from .svm import LinearSVMs
from .window_features import pool_windows


@contextmanager
def timed_stage(timings: dict | None, stage: str):
    """Add the seconds spent in the block to ``timings[stage]`` (nothing if timings is None)."""
    start = time.perf_counter()
    yield
    if timings is not None:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start


class Detector:
    """An SPP-net detector (or its R-CNN twin when ``cfg.mode == "rcnn"``).

    Build one with :func:`detector.model.load_model`, or from the parts that
    :func:`detector.training.train` produces.
    """

    def __init__(self, cfg: Config, class_names: Sequence[str], backbone: Backbone, head: FCHead,
                 svms: LinearSVMs, regressors: BoxRegressors | None = None):
        self.cfg = cfg
        self.class_names = tuple(class_names)
        self.backbone = backbone.eval()
        self.head = head.eval()
        self.svms = svms
        self.regressors = regressors if cfg.bbox.enabled else None
        self.pool = SpatialPyramidPool(cfg.pool.levels)

    def propose(self, image: np.ndarray) -> np.ndarray:
        """Selective-search windows of an RGB uint8 image, float32 [N, 4]."""
        from proposals import propose_with_config
        return propose_with_config(image, self.cfg.proposals)

    def pool5(self, image: np.ndarray, windows, name: str = "image", timings: dict | None = None
              ) -> torch.Tensor:
        """pool5 vectors [N, D] of ``windows`` (original image coordinates)."""
        if self.cfg.mode == "rcnn":
            from .rcnn import rcnn_pool5
            with timed_stage(timings, "conv"):
                return rcnn_pool5(self.backbone, image, windows, self.pool, self.cfg.rcnn)
        with timed_stage(timings, "conv"):
            maps = compute_feature_maps(self.backbone, image, self.cfg.features.scales,
                                        self.cfg.features.max_size, name)
        with timed_stage(timings, "pool"):
            return pool_windows(maps, windows, self.pool, self.backbone.grid, self.cfg.pool.canonical_window,
                                self.cfg.pool.window_margin)

    @torch.inference_mode()
    def score_windows(self, image: np.ndarray, windows=None, name: str = "image",
                      timings: dict | None = None, pooled: torch.Tensor | None = None) -> "ScoredWindows":
        """SVM scores [N, K] of the windows (computed with selective search when None).

        ``pooled``, if given, is the windows' pool5 [N, D] from a feature cache
        (R-CNN's test-set cache); the conv layers are then not run.
        """
        if windows is None:
            with timed_stage(timings, "proposals"):
                windows = self.propose(image)
        windows = as_box_tensor(windows)
        if pooled is None:
            pooled = self.pool5(image, windows, name, timings)
        elif len(pooled) != len(windows):
            raise ValueError(f"{name}: {len(pooled)} cached pool5 vectors for {len(windows)} windows")
        with timed_stage(timings, "fc"):
            feats = self.head.features(pooled, self.cfg.svm.feature)
        with timed_stage(timings, "svm"):
            scores = torch.from_numpy(self.svms.score(feats.numpy()))
        return ScoredWindows(windows, pooled, scores, image.shape[1], image.shape[0])

    @torch.inference_mode()
    def detect(self, image: np.ndarray, windows=None, name: str = "image",
               timings: dict | None = None) -> Detections:
        """Detect objects in an RGB uint8 image [H, W, 3].

        Args:
            windows: [N, 4] proposals in image coordinates; computed with the
                configured selective search when None.
            timings: if given, seconds per stage are added to it (proposals,
                conv, pool, fc, svm, bbox, nms).
        Returns:
            detections after per-class NMS: at most ``cfg.test.max_per_class``
            per class and ``cfg.test.max_per_image`` in all (0: no cap).
        """
        return self.postprocess(self.score_windows(image, windows, name, timings), timings)

    def postprocess(self, scored: "ScoredWindows", timings: dict | None = None,
                    regress: bool = True) -> Detections:
        """Threshold, regress (unless ``regress`` is False), clip and NMS the scored windows."""
        test = self.cfg.test
        with timed_stage(timings, "bbox"):
            win_idx, labels = torch.nonzero(scored.scores > test.score_threshold, as_tuple=True)
            boxes = scored.windows[win_idx]
            if regress and self.regressors is not None and len(win_idx):
                boxes = torch.from_numpy(self.regressors.apply(
                    scored.pooled[win_idx].numpy(), boxes.numpy(), labels.numpy())).float()
            boxes = clip_boxes(boxes, scored.width, scored.height)
            det_scores = scored.scores[win_idx, labels]
        with timed_stage(timings, "nms"):
            keep = batched_nms(boxes, det_scores, labels, test.nms_iou, test.max_per_class)
            keep = keep[: test.max_per_image or None]
        return Detections(boxes[keep].numpy().astype(np.float32),
                          det_scores[keep].numpy().astype(np.float32),
                          labels[keep].numpy().astype(np.int64))


@dataclass(frozen=True)
class ScoredWindows:
    """An image's windows [N, 4], their pool5 vectors [N, D] and SVM scores [N, K]."""

    windows: torch.Tensor
    pooled: torch.Tensor
    scores: torch.Tensor
    width: int
    height: int
