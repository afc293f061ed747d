"""The trained detector: the whole test-time pipeline reads in one place.

``windows -> pool5 (window features) -> fc -> SVM scores -> box regression -> NMS``
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from proposals.config import ProposalConfig

from ..training.bbox_regression import BoxRegressors
from ..boxes import as_box_tensor, batched_nms, clip_boxes
from ..config import TestConfig
from ..features.distinct import distinct_rows
from ..heads import FCHead
from ..records import Detections
from ..training.svm import LinearSVMs
from ..threads import limit_threads, network_threads
from ..timing import timed_stage
from ..features.pool5 import ImageSource, WindowFeatures


@dataclass(frozen=True, eq=False)
class Detector:
    """An SPP-net detector (or its R-CNN twin: the same parts on warped-crop features).

    Build one with :func:`detector.model.load_model`, or with
    :func:`detector.build.build_detector` from the parts training produces. It
    holds only what it runs; the config it came from is the model file's
    provenance (:class:`detector.model.TrainedModel`). A variant (other window
    features, threads or reserved cores) is ``dataclasses.replace(detector, ...)``.

    Args:
        features: where windows' pool5 vectors come from.
        head: the fine-tuned fc layers.
        svms: one linear SVM per class, on ``svm_feature`` ("pool5", "fc6" or "fc7").
        regressors: per-class box regressors on pool5, or None.
        class_names: the classes in label order.
        test: thresholds, NMS, caps, scorer and threads of the test-time pipeline.
        proposals: the selective search used when no windows are given.
        reserved_cores: cores lent to work running beside this detector (the
            proposal workers of a pipelined run); the network's threads come
            from the rest (detector/threads.py).

    Each call runs the network with :func:`detector.threads.network_threads`
    threads (``test.threads``, ``SPPNET_THREADS``, else the free cores) and the
    pooling with one, and leaves the caller's torch and OpenCV thread settings
    as it found them.
    """

    features: WindowFeatures
    head: FCHead
    svms: LinearSVMs
    regressors: BoxRegressors | None
    class_names: Sequence[str]
    test: TestConfig
    svm_feature: str
    proposals: ProposalConfig
    reserved_cores: int = 0

    def __post_init__(self):
        object.__setattr__(self, "class_names", tuple(self.class_names))  # frozen: set once, here
        self.head.eval()
        self.features.backbone.eval()

    @property
    def backbone(self):
        return self.features.backbone

    def with_reserved_cores(self, cores: int) -> "Detector":
        """The same detector leaving ``cores`` cores to work that runs beside it (the method
        :func:`detector.inference.folders.detect_files` calls on this and the ONNX runtime's detector)."""
        return dataclasses.replace(self, reserved_cores=cores)

    def network_threads(self) -> int:
        """Threads for this image's conv and fc layers (decided per call: the load changes)."""
        return network_threads(self.test.threads, self.reserved_cores)

    def propose(self, image: np.ndarray) -> np.ndarray:
        """Selective-search windows of an RGB uint8 image, float32 [N, 4]."""
        from proposals import propose_with_config
        return propose_with_config(image, self.proposals)

    @torch.inference_mode()
    def score_windows(self, image: ImageSource | np.ndarray, windows=None,
                      timings: dict | None = None) -> "ScoredWindows":
        """SVM scores [N, K] of the windows (computed with selective search when None)."""
        with limit_threads(self.network_threads()):
            return self._score_windows(image, windows, timings)

    def _score_windows(self, image: ImageSource | np.ndarray, windows, timings: dict | None) -> "ScoredWindows":
        if not isinstance(image, ImageSource):
            image = ImageSource.from_pixels(image)
        if windows is None:
            with timed_stage(timings, "proposals"):
                windows = self.propose(image.pixels())
        windows = as_box_tensor(windows)
        pooled = self.features.pool5(image, windows, timings)
        # Each distinct pool5 vector is scored once (detector/features/distinct.py: exact ties).
        with timed_stage(timings, "fc"):
            first, inverse = (torch.from_numpy(a) for a in distinct_rows(pooled.numpy()))
            distinct = pooled[first]
            if self.test.scorer == "softmax":
                scores = self.head.class_probabilities(distinct)[:, 1:][inverse].contiguous()
            else:
                feats = self.head.features(distinct, self.svm_feature)
        if self.test.scorer != "softmax":
            with timed_stage(timings, "svm"):
                scores = torch.from_numpy(self.svms.score(feats.numpy()))[inverse]
        height, width = image.pixels().shape[:2]
        return ScoredWindows(windows, pooled, scores, width, height)

    @torch.inference_mode()
    def detect(self, image: np.ndarray, windows=None, name: str = "image",
               timings: dict | None = None) -> Detections:
        """Detect objects in an RGB uint8 image [H, W, 3].

        Args:
            windows: [N, 4] proposals in image coordinates; computed with the
                configured selective search when None.
            name: how error messages name the image.
            timings: if given, seconds per stage are added to it (proposals,
                conv, pool, fc, svm, bbox, nms).
        Returns:
            per-class NMS, then at most ``test.max_per_class`` detections
            per class and ``test.max_per_image`` in all (0: no cap).
        """
        with limit_threads(self.network_threads()):
            scored = self._score_windows(ImageSource.from_pixels(image, name), windows, timings)
            return self.postprocess(scored, timings)

    def postprocess(self, scored: "ScoredWindows", timings: dict | None = None,
                    regress: bool = True) -> Detections:
        """Threshold, regress (unless ``regress`` is False), clip and NMS the scored windows,
        regression before or after NMS as ``test.order`` says."""
        test = self.test
        win_idx, labels = torch.nonzero(scored.scores > test.score_threshold, as_tuple=True)
        boxes, det_scores = scored.windows[win_idx], scored.scores[win_idx, labels]
        regress = regress and self.regressors is not None
        if test.order == "nms_then_regress":
            # The official order: NMS on the proposal boxes themselves, the top
            # max_per_class, then each kept window regressed; no second NMS.
            with timed_stage(timings, "nms"):
                keep = batched_nms(boxes, det_scores, labels, test.nms_iou, test.max_per_class)
                keep = keep[: test.max_per_image or None]
            win_idx, labels, boxes, det_scores = win_idx[keep], labels[keep], boxes[keep], det_scores[keep]
            with timed_stage(timings, "bbox"):
                if regress:
                    boxes = self._regress(scored, win_idx, labels, boxes)
                boxes = clip_boxes(boxes, scored.width, scored.height)
        else:
            with timed_stage(timings, "bbox"):
                if regress:
                    boxes = self._regress(scored, win_idx, labels, boxes)
                boxes = clip_boxes(boxes, scored.width, scored.height)
            with timed_stage(timings, "nms"):
                keep = batched_nms(boxes, det_scores, labels, test.nms_iou, test.max_per_class)
                keep = keep[: test.max_per_image or None]
            boxes, det_scores, labels = boxes[keep], det_scores[keep], labels[keep]
        return Detections(boxes.numpy().astype(np.float32), det_scores.numpy().astype(np.float32),
                          labels.numpy().astype(np.int64))

    def _regress(self, scored: "ScoredWindows", win_idx: torch.Tensor, labels: torch.Tensor,
                 boxes: torch.Tensor) -> torch.Tensor:
        """Windows ``win_idx`` moved by their class's (``labels``) box regressor."""
        if not len(win_idx):
            return boxes
        return torch.from_numpy(self.regressors.apply(
            scored.pooled[win_idx].numpy(), boxes.numpy(), labels.numpy())).float()


@dataclass(frozen=True)
class ScoredWindows:
    """An image's windows [N, 4], their pool5 vectors [N, D] and SVM scores [N, K]."""

    windows: torch.Tensor
    pooled: torch.Tensor
    scores: torch.Tensor
    width: int
    height: int
