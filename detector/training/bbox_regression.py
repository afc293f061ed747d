"""Per-class ridge regression of box deltas from window features (R-CNN).

Follows R-CNN's ``rcnn_train_bbox_regressor.m``:

* training windows: IoU >= ``min_iou`` (0.6) with their best-matching
  ground-truth box; the targets are that box's (dx, dy, dw, dh) from
  :func:`detector.boxes.encode_boxes`, and the class is that box's class;
* features are multiplied by ``target_norm / mean L2 norm`` (20 in R-CNN,
  the same scaling as the SVMs; the mean is over all rows given);
* per class, targets are centred and divided by their standard deviation
  (R-CNN whitens them with the full 4x4 covariance; per-coordinate
  standardisation is the Fast R-CNN variant and nearly the same, since the
  four deltas are close to uncorrelated), then
  ``min ||X W + b - T||^2 + lambda ||W||^2`` is solved in closed form in
  float64. The bias is not penalised (R-CNN appends a column of ones and
  penalises it like any weight; with centred targets the difference is small,
  and an unpenalised bias keeps the fit invariant to shifting the features).
* classes with no training window keep the identity (zero deltas).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import scipy.linalg
import torch

from ..boxes import as_box_tensor, decode_boxes, encode_boxes
from ..config import BBoxConfig, SVMConfig
from ..records import class_label
from ..state_dicts import from_state, to_state

log = logging.getLogger(__name__)

# A target coordinate with smaller spread (e.g. one training window) is left
# unscaled rather than divided by ~0.
MIN_TARGET_STD = 1e-6
# Rows of X per float64 block when accumulating X^T X (bounds the temporary copy).
GRAM_CHUNK_ROWS = 4096


class BoxRegressionDataError(ValueError):
    """Inconsistent training arrays for the box regressors."""


@dataclass(frozen=True)
class BoxRegressors:
    """K linear box regressors.

    deltas = (feature_scale * x @ weights[k] + bias[k]) * target_std[k] + target_mean[k]
    """

    weights: np.ndarray  # float32 [K, D, 4]
    bias: np.ndarray  # float32 [K, 4]
    target_mean: np.ndarray  # float32 [K, 4]
    target_std: np.ndarray  # float32 [K, 4]
    feature_scale: float
    num_samples: np.ndarray  # int64 [K] training windows per class (0: identity)

    def __post_init__(self):
        k = self.weights.shape[0]
        if (self.weights.ndim != 3 or self.weights.shape[2] != 4
                or any(a.shape != (k, 4) for a in (self.bias, self.target_mean, self.target_std))
                or self.num_samples.shape != (k,)):
            raise ValueError(f"BoxRegressors: inconsistent shapes weights {self.weights.shape}, "
                             f"bias {self.bias.shape}, target_mean {self.target_mean.shape}, "
                             f"target_std {self.target_std.shape}, num_samples "
                             f"{self.num_samples.shape}")

    @property
    def num_classes(self) -> int:
        return self.weights.shape[0]

    def predict(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Regression deltas. features: [N, D] unscaled, labels: [N] -> float32 [N, 4]."""
        features = np.asarray(features, dtype=np.float32).reshape(-1, self.weights.shape[1])
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != len(features):
            raise ValueError(f"{len(features)} feature rows but {len(labels)} labels")
        if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"labels outside [0, {self.num_classes})")
        deltas = np.zeros((len(labels), 4), np.float32)
        for k in np.unique(labels):
            rows = labels == k
            raw = (features[rows] @ self.weights[k]) * np.float32(self.feature_scale) + self.bias[k]
            deltas[rows] = raw * self.target_std[k] + self.target_mean[k]
        return deltas

    def apply(self, features: np.ndarray, boxes: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Refined boxes float32 [N, 4] for windows boxes [N, 4] of classes labels [N]."""
        deltas = self.predict(features, labels)
        refined = decode_boxes(as_box_tensor(boxes), torch.from_numpy(deltas))
        return refined.numpy()

    def to_state_dict(self) -> dict:
        """Tensors and plain numbers only (loadable with torch.load(weights_only=True))."""
        return to_state(self, _STATE_ARRAYS, ("feature_scale",))

    @classmethod
    def from_state_dict(cls, state: dict) -> "BoxRegressors":
        return cls(**from_state(state, _STATE_ARRAYS, ("feature_scale",), "BoxRegressors"))


_STATE_ARRAYS = {"weights": np.float32, "bias": np.float32, "target_mean": np.float32,
                 "target_std": np.float32, "num_samples": np.int64}


def fit_ridge(x: np.ndarray, t: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form ridge regression with an unpenalised bias, in float64.

    Minimises ||x W + b - t||^2 + lam ||W||^2. x: [n, D], t: [n, M], lam > 0.
    Returns W [D, M] and b [M]. Centring x and t removes b; the centred
    problem is solved in the primal ((Xc^T Xc + lam I) W = Xc^T Tc) when
    n >= D and in the dual (W = Xc^T (Xc Xc^T + lam I)^-1 Tc) otherwise,
    whichever system is smaller.
    """
    n, d = x.shape
    t = np.asarray(t, dtype=np.float64)
    x_mean = x.mean(axis=0, dtype=np.float64)
    t_mean = t.mean(axis=0)
    tc = t - t_mean
    if n >= d:
        gram = np.zeros((d, d))
        rhs = np.zeros((d, t.shape[1]))
        for i in range(0, n, GRAM_CHUNK_ROWS):
            xc = x[i:i + GRAM_CHUNK_ROWS].astype(np.float64) - x_mean
            gram += xc.T @ xc
            rhs += xc.T @ tc[i:i + GRAM_CHUNK_ROWS]
        gram[np.diag_indices(d)] += lam
        w = scipy.linalg.solve(gram, rhs, assume_a="pos")
    else:
        xc = x.astype(np.float64) - x_mean
        kernel = xc @ xc.T
        kernel[np.diag_indices(n)] += lam
        w = xc.T @ scipy.linalg.solve(kernel, tc, assume_a="pos")
    return w, t_mean - x_mean @ w


def check_ridge_lambda(cfg: BBoxConfig) -> None:
    if not cfg.ridge_lambda > 0:
        raise ValueError(f"bbox.ridge_lambda must be positive, got {cfg.ridge_lambda}")


def regression_targets(boxes: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """float64 [N, 4] (dx, dy, dw, dh) from windows [N, 4] to their gt boxes [N, 4]."""
    sizes = np.concatenate([boxes[:, 2:] - boxes[:, :2], gt_boxes[:, 2:] - gt_boxes[:, :2]], axis=1)
    if (sizes <= 0).any():
        raise BoxRegressionDataError("box regression training data: a selected window or its "
                                     "gt box has zero or negative width/height")
    return encode_boxes(as_box_tensor(boxes), as_box_tensor(gt_boxes)).numpy().astype(np.float64)


def target_moments(targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A class's target mean and spread [4] each (a spread under MIN_TARGET_STD is left at 1)."""
    s = targets.std(axis=0)
    return targets.mean(axis=0), np.where(s > MIN_TARGET_STD, s, 1.0)


def log_training_windows(counts: np.ndarray, cfg: BBoxConfig, class_names: Sequence[str] | None) -> None:
    """The log's account of the windows each class trained on (a warning for a class with none)."""
    for k in np.flatnonzero(counts == 0):
        log.warning("box regression: %s has no window with IoU >= %.2f; "
                    "its boxes stay unchanged", class_label(int(k), class_names), cfg.min_iou)
    per_class = (dict(zip(class_names, counts.tolist())) if class_names is not None
                 else counts.tolist())
    log.info("box regressors trained on %d windows (per class %s)", int(counts.sum()), per_class)


def _check_inputs(features, boxes, gt_boxes, labels, overlaps, num_classes, class_names) -> None:
    n = len(features)
    problems = []
    if class_names is not None and len(class_names) != num_classes:
        problems.append(f"{len(class_names)} class names for {num_classes} classes")
    if features.ndim != 2:
        problems.append(f"features must be [N, D], got {features.shape}")
    if boxes.shape != (n, 4) or gt_boxes.shape != (n, 4):
        problems.append(f"boxes {boxes.shape} / gt_boxes {gt_boxes.shape} must be [{n}, 4]")
    if labels.shape != (n,) or overlaps.shape != (n,):
        problems.append(f"labels {labels.shape} / overlaps {overlaps.shape} must be [{n}]")
    elif n and (labels.min() < 0 or labels.max() >= num_classes):
        problems.append(f"labels outside [0, {num_classes})")
    if not problems and not np.isfinite(features).all():
        problems.append("features contain NaN or inf")
    if problems:
        raise BoxRegressionDataError("box regression training data: " + "; ".join(problems))


def train_box_regressors(features: np.ndarray, boxes: np.ndarray, gt_boxes: np.ndarray,
                         labels: np.ndarray, overlaps: np.ndarray, num_classes: int,
                         cfg: BBoxConfig, feature_scale: float | None = None,
                         target_norm: float = SVMConfig.target_norm,
                         class_names: Sequence[str] | None = None) -> BoxRegressors:
    """Fit one ridge regressor per class on windows overlapping a gt box by >= cfg.min_iou.

    Args:
        features: [N, D] window features (pool5 in R-CNN), unscaled.
        boxes: [N, 4] the windows; gt_boxes: [N, 4] each window's best-matching gt box.
        labels: [N] class of that gt box, in [0, num_classes).
        overlaps: [N] IoU of the window with that gt box.
        cfg: the ``bbox`` config section (min_iou, ridge_lambda).
        feature_scale: multiply features by this; None: ``target_norm`` / mean L2
            norm of all N rows of ``features``.
        class_names: the classes' names, for the log (None: classes named by index).
    """
    features = np.asarray(features, dtype=np.float32)
    boxes, gt_boxes = np.asarray(boxes, np.float32), np.asarray(gt_boxes, np.float32)
    labels, overlaps = np.asarray(labels).astype(np.int64), np.asarray(overlaps, np.float32)
    _check_inputs(features, boxes, gt_boxes, labels, overlaps, num_classes, class_names)
    check_ridge_lambda(cfg)
    n, d = features.shape
    if feature_scale is None:
        mean_norm = float(np.linalg.norm(features, axis=1).mean(dtype=np.float64)) if n else 0.0
        feature_scale = target_norm / mean_norm if mean_norm > 0 else 1.0
    selected = overlaps >= cfg.min_iou
    targets = regression_targets(boxes[selected], gt_boxes[selected])
    sel_features, sel_labels = features[selected], labels[selected]

    weights = np.zeros((num_classes, d, 4), np.float32)
    bias = np.zeros((num_classes, 4), np.float32)
    mean = np.zeros((num_classes, 4), np.float32)
    std = np.ones((num_classes, 4), np.float32)
    counts = np.bincount(sel_labels, minlength=num_classes).astype(np.int64)
    for k in range(num_classes):
        if counts[k] == 0:
            continue
        rows = sel_labels == k
        t = targets[rows]
        mean[k], std[k] = target_moments(t)
        w, b = fit_ridge(sel_features[rows] * np.float32(feature_scale),
                         (t - mean[k]) / std[k], cfg.ridge_lambda)
        weights[k], bias[k] = w, b
    log_training_windows(counts, cfg, class_names)
    return BoxRegressors(weights=weights, bias=bias, target_mean=mean, target_std=std,
                         feature_scale=float(feature_scale), num_samples=counts)
