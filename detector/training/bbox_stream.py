"""Box regression trained image by image: per-class ridge normal equations.

The same regressors as :func:`detector.training.bbox_regression.train_box_regressors`
(targets, their per-class standardisation, the feature scale ``target_norm /
mean L2 norm`` of every training window, the unpenalised bias), but no window
is held: each image's windows are added to the normal equations of their
class (``X^T X``, ``X^T T``, ``sum X`` in float64) and dropped. Memory is one
D x D matrix per class (plus each window's four targets), whatever the number
of windows, so every window over ``bbox.min_iou`` can train. Classes whose
matrices do not fit ``bbox.normal_equations_max_mb`` together are solved in
further passes over the images.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import scipy.linalg
import scipy.linalg.blas

from .bbox_regression import (BoxRegressors, check_ridge_lambda, log_training_windows, regression_targets,
                              target_moments)
from ..config import BBoxConfig, SVMConfig
from .window_sampler import WindowUse

MB = 1 << 20


@dataclass(frozen=True)
class RegressionWindows:
    """One image's box-regression windows (those of the classes a pass asked for)."""

    image: int  # the image's index in the pass
    features: np.ndarray  # float32 [n, D] pool5, unscaled
    boxes: np.ndarray  # float32 [n, 4] the windows
    gt_boxes: np.ndarray  # float32 [n, 4] each window's best gt box
    labels: np.ndarray  # int64 [n] that box's class
    eligible: int  # the image's windows over min_iou, before bbox.max_per_image


# Rows a class gathers before one rank-k update of its Gram matrix. A product per image
# (tens of rows) wrote and added a D x D temporary each time (184 MB at D=4800): the
# stage was bound by that memory traffic, not by the arithmetic. Fixed, so the sums (and
# the regressors) do not depend on bbox.normal_equations_max_mb's grouping.
BUFFER_ROWS = 512


class NormalEquations:
    """One class's ridge problem, accumulated a chunk of rows at a time.

    Sums are taken about a shift ``c`` (the first chunk's mean) so that
    centring at the end subtracts nearby numbers, not large ones. Rows are
    gathered ``BUFFER_ROWS`` at a time and added to the Gram matrix's upper
    triangle in one BLAS ``syrk`` call (half the products of ``X^T X``, in place).
    """

    def __init__(self, dim: int):
        self.count = 0
        self.shift = np.zeros(dim)
        self.sum = np.zeros(dim)  # sum of (x - c)
        self.gram = np.zeros((dim, dim), order="F")  # upper triangle of sum of (x - c)(x - c)^T
        self.cross = np.zeros((dim, 4))  # sum of (x - c) t^T
        self.targets: list[np.ndarray] = []
        self._rows: np.ndarray | None = None  # [BUFFER_ROWS, D] rows (x - c) not yet in gram
        self._filled = 0

    def add(self, x: np.ndarray, t: np.ndarray) -> None:
        """Rows x [n, D] (unscaled features) with their targets t [n, 4]."""
        x = np.asarray(x, dtype=np.float64)
        if self.count == 0:
            self.shift = x.mean(axis=0)
        xs = x - self.shift
        self.count += len(x)
        self.sum += xs.sum(axis=0)
        self.cross += xs.T @ t
        self.targets.append(t)
        if self._rows is None:
            self._rows = np.empty((BUFFER_ROWS, len(self.shift)))
        while len(xs):
            take = min(len(xs), BUFFER_ROWS - self._filled)
            self._rows[self._filled:self._filled + take] = xs[:take]
            self._filled, xs = self._filled + take, xs[take:]
            if self._filled == BUFFER_ROWS:
                self._flush()

    def _flush(self) -> None:
        if self._filled:
            # gram += R^T R on the upper triangle; rows.T is the F-ordered D x k view BLAS takes.
            self.gram = scipy.linalg.blas.dsyrk(1.0, self._rows[:self._filled].T, beta=1.0, c=self.gram,
                                                overwrite_c=True)
            self._filled = 0

    def full_gram(self) -> np.ndarray:
        """A new array: sum of (x - c)(x - c)^T, both triangles (every row added so far)."""
        self._flush()
        self._rows = None
        full = np.triu(self.gram)
        full += np.triu(full, 1).T
        return full

    def solve(self, scale: float, lam: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(W [D, 4], b [4], target mean [4], target std [4]) of ridge on features x scale
        against the standardised targets: what ``fit_ridge`` gives on the same rows."""
        t = np.concatenate(self.targets)
        mean, std = target_moments(t)
        d = self.sum / self.count  # mean - shift
        gram = self.full_gram()
        gram -= self.count * np.outer(d, d)
        gram *= scale ** 2
        gram[np.diag_indices_from(gram)] += lam
        # Centred features sum to zero: X_c^T (t - mean) / std = X_c^T t / std.
        cross = (self.cross - np.outer(d, t.sum(axis=0))) * scale / std
        w = scipy.linalg.solve(gram, cross, assume_a="pos")
        b = ((t - mean) / std).mean(axis=0) - (scale * (self.shift + d)) @ w
        return w, b, mean, std


def class_groups(num_classes: int, dim: int, max_mb: float) -> list[list[int]]:
    """The classes, in groups whose normal equations fit ``max_mb`` together (at least one a group)."""
    per_group = max(1, int(max_mb * MB // (8 * dim * (dim + 5 + BUFFER_ROWS))))
    return [list(range(k, min(k + per_group, num_classes))) for k in range(0, num_classes, per_group)]


def train_box_regressors_streamed(images: Callable[[Sequence[int] | None], Iterable[RegressionWindows]],
                                  num_classes: int, dim: int, cfg: BBoxConfig,
                                  target_norm: float = SVMConfig.target_norm,
                                  class_names: Sequence[str] | None = None,
                                  feature_scale: float | None = None) -> tuple[BoxRegressors, WindowUse]:
    """Per-class ridge regressors from the windows ``images(classes)`` yields, image by image.

    ``images(None)`` must yield every training window (the first pass: the
    feature scale is ``target_norm`` over their mean norm unless
    ``feature_scale`` is given, e.g. from bbox.norm_windows=random),
    ``images(classes)`` those of ``classes`` only, the same windows each time.
    Returns the regressors and the windows they used (of the eligible ones).
    """
    check_ridge_lambda(cfg)
    weights = np.zeros((num_classes, dim, 4), np.float32)
    bias = np.zeros((num_classes, 4), np.float32)
    mean = np.zeros((num_classes, 4), np.float32)
    std = np.ones((num_classes, 4), np.float32)
    counts = np.zeros(num_classes, np.int64)
    norm_sum, used, eligible, images_used, images_eligible = 0.0, 0, 0, 0, 0
    scale = 1.0
    for number, group in enumerate(class_groups(num_classes, dim, cfg.normal_equations_max_mb)):
        equations = {k: NormalEquations(dim) for k in group}
        for item in images(None if number == 0 else group):
            if number == 0:  # every window passes once: the scale and the report
                norm_sum += float(np.linalg.norm(item.features, axis=1).sum(dtype=np.float64))
                used, eligible = used + len(item.labels), eligible + item.eligible
                images_used, images_eligible = images_used + bool(len(item.labels)), images_eligible + 1
            targets = regression_targets(item.boxes, item.gt_boxes)
            for k in np.intersect1d(np.unique(item.labels), group):
                rows = item.labels == k
                equations[k].add(item.features[rows], targets[rows])
        if number == 0:
            mean_scale = target_norm / (norm_sum / used) if used and norm_sum > 0 else 1.0
            scale = mean_scale if feature_scale is None else feature_scale
        for k, eq in equations.items():
            if eq.count:
                counts[k] = eq.count
                weights[k], bias[k], mean[k], std[k] = eq.solve(scale, cfg.ridge_lambda)
    log_training_windows(counts, cfg, class_names)
    regressors = BoxRegressors(weights=weights, bias=bias, target_mean=mean, target_std=std,
                               feature_scale=float(scale), num_samples=counts)
    return regressors, WindowUse(distinct_windows=used, eligible_windows=eligible, images=images_used,
                                 eligible_images=images_eligible)
