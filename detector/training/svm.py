"""Per-class linear SVMs trained with hard-negative mining (R-CNN / SPP-net).

The procedure follows R-CNN's ``rcnn_train.m`` (which SPP-net reuses):

* Positives of class k: the features of the image's ground-truth boxes of
  class k, excluding ``difficult`` ones (evaluation ignores them, so they are
  not taught as positives either; Fast R-CNN does the same by default; the
  training stage passes none as difficult when ``data.difficult_stages``
  names svm, the official code's choice).
* Candidate negatives of class k: every window, proposals and ground-truth
  boxes alike (R-CNN's feature cache holds both), whose IoU with every
  ground-truth box of class k is ``<= neg_iou`` (``< neg_iou`` with
  ``neg_iou_strict``, the official rule). Difficult boxes count here:
  a window on a difficult object is neither a positive nor a negative.
* Duplicates (``neg_dedup``): "nms", per image and class candidate negatives
  are suppressed greedily at IoU > ``neg_nms``, keeping the one the current
  model scores highest (the hardest), ties broken by window order (proposal
  order, then gt order); "identical" (the official code), a window whose
  features equal an earlier window's of the image is dropped.
* Passes over the images (``images()`` is called ``1 + mining_rounds`` times):
  1. *collect*: positives, the exact mean L2 norm of all proposal windows
     (for the feature scale; or a ``mean_norm`` given, as ``svm.norm_windows=random``
     measures it on random windows, the official code's rule), and seed negatives: up to
     ``initial_negatives`` random candidates per image and class, kept in a
     uniform reservoir sample of at most ``svm.max_negatives_per_class`` per
     class (0, the default: no bound) and of at most ``svm.seed_mb`` MiB over
     all classes (:func:`seed_capacity`; the stats' ``seed_negatives``: the
     capacity and what each class was offered and kept), so the seeds do not
     grow with the number of images.
     Every class is then trained once on positives + seeds (R-CNN instead
     seeds with all negatives of the first image; a sample from every image
     gives the first model less bias).
  2. *mining* rounds: each image's candidates that score > ``hard_threshold``
     and are not cached yet are added; a class is retrained once more than
     ``retrain_limit`` negatives were added since its last update, and at the
     end of every round.
* After every update, cached negatives scoring < ``evict_threshold`` are
  evicted; with a bound, if more than ``max_negatives_per_class`` remain,
  the easiest extra ones go too. A bounded cache therefore never holds more
  than ``max_negatives_per_class + retrain_limit + windows of one image``
  rows; the stats count what the bound dropped per class
  (``negatives_dropped_by_cap``). The official code bounds nothing.
* A class with no positives keeps zero weights and bias -inf (never fires)
  with a logged warning; so does a class that never got a negative.

An image's features may be :class:`LazyFeatures`: the collect pass then computes
only the rows it keeps (ground truth, seeds; every row only for the exact mean norm
or ``neg_dedup=identical``), and the reservoir decides which rows it keeps before
their features exist (:meth:`NegativeCache.plan_reservoir`), so the seeds are the
same rows and values either way.

Caches keep the features as given (float32, unscaled); the scale factor
``target_norm / mean_norm`` is applied when a solver matrix is built and in
:meth:`LinearSVMs.score`.
"""
from __future__ import annotations

import logging
import sys
import time
import warnings
from contextlib import closing
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC

from ..config import SVMConfig
from .negatives import (NegativeCache, find_negative_candidates, first_of_identical,
                        suppress_overlapping_negatives)
from ..records import class_label
from ..progress import progress_of
from ..threads import adapting_threads
from ..state_dicts import from_state, to_state

log = logging.getLogger(__name__)

# rcnn_train.m init_cache: retrain a class after this many new negatives.
RETRAIN_LIMIT = 2000
# The bound of an unbounded cache (svm.max_negatives_per_class = 0).
UNBOUNDED = sys.maxsize
# liblinear dual coordinate descent converges in tens of iterations at C=1e-3;
# the cap only guards against pathological data.
SOLVER_MAX_ITER = 10_000
# Cache keys: image_index * KEY_STRIDE + window index (proposals, then gt boxes).
KEY_STRIDE = 1 << 32


def seed_capacity(seed_mb: float, num_classes: int, dim: int) -> int:
    """Seed negatives kept per class: ``seed_mb`` MiB of float32 rows of ``dim`` over
    ``num_classes`` classes (at least 1; 0 MiB: no bound)."""
    if seed_mb <= 0:
        return UNBOUNDED
    return max(1, int(seed_mb * 2**20) // (num_classes * dim * 4))


class SVMDataError(ValueError):
    """A training image whose arrays are inconsistent (names the image)."""


class LazyFeatures:
    """An image's window features computed on demand (the SVM collect pass needs few rows).

    ``compute(idx)`` returns float32 [len(idx), D] for sorted window indices ``idx``
    (None: every row). :meth:`rows` computes the rows asked for; :meth:`full` computes
    all of them once, keeps them and drops ``compute`` (and what it holds: the pooled
    windows); :meth:`release` drops ``compute`` without them (the collect pass, done with
    an image).
    """

    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(self, num_rows: int, dim: int, compute: Callable[[np.ndarray], np.ndarray]):
        self.shape = (num_rows, dim)
        self._compute: Callable[[np.ndarray], np.ndarray] | None = compute
        self._full: np.ndarray | None = None

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        """The bytes :meth:`full` holds (computed or not)."""
        return self.shape[0] * self.shape[1] * self.dtype.itemsize

    def rows(self, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        if self._full is not None:
            return self._full[idx]
        if len(idx) == 0:
            return np.zeros((0, self.shape[1]), np.float32)
        return self._compute(idx)

    def full(self) -> np.ndarray:
        if self._full is None:
            if self._compute is None:
                raise RuntimeError("LazyFeatures.full() after release(): the pooled windows are gone")
            self._full = self._compute(None)
            self._compute = None
        return self._full

    def release(self) -> None:
        """Drop what computes rows (kept rows stay): memory back before the next image."""
        self._compute = None


def feature_rows(features: "np.ndarray | LazyFeatures", idx: np.ndarray) -> np.ndarray:
    """Rows ``idx`` of an image's features, computing only those of :class:`LazyFeatures`."""
    return features.rows(idx) if isinstance(features, LazyFeatures) else features[idx]


def all_features(features: "np.ndarray | LazyFeatures") -> np.ndarray:
    """Every row of an image's features (:meth:`LazyFeatures.full`)."""
    return features.full() if isinstance(features, LazyFeatures) else features


@dataclass(frozen=True)
class TrainImage:
    """One training image's windows and ground truth, features computed or :class:`LazyFeatures`."""

    image_id: str
    features: "np.ndarray | LazyFeatures"  # float32 [N, D] features of the proposal windows
    boxes: np.ndarray  # float32 [N, 4] the windows (x1, y1, x2, y2), 0-based continuous
    gt_features: np.ndarray  # float32 [G, D] features of the ground-truth boxes
    gt_boxes: np.ndarray  # float32 [G, 4]
    gt_labels: np.ndarray  # int64 [G] class index in [0, K)
    gt_difficult: np.ndarray  # bool [G]


@dataclass(frozen=True)
class LinearSVMs:
    """K one-vs-rest linear SVMs: score = feature_scale * (x . w_k) + b_k."""

    weights: np.ndarray  # float32 [K, D], for features multiplied by feature_scale
    bias: np.ndarray  # float32 [K]; -inf for a class that was never trained
    feature_scale: float  # target_norm / mean L2 norm of the training windows

    def __post_init__(self):
        if self.weights.ndim != 2 or self.bias.shape != (self.weights.shape[0],):
            raise ValueError(f"LinearSVMs: weights {self.weights.shape} and bias "
                             f"{self.bias.shape} disagree")

    @property
    def num_classes(self) -> int:
        return self.weights.shape[0]

    def score(self, features: np.ndarray) -> np.ndarray:
        """SVM scores of windows. features: [N, D] unscaled -> float32 [N, K]."""
        features = np.asarray(features, dtype=np.float32).reshape(-1, self.weights.shape[1])
        return (features @ self.weights.T) * np.float32(self.feature_scale) + self.bias

    def to_state_dict(self) -> dict:
        """Tensors and plain numbers only (loadable with torch.load(weights_only=True))."""
        return to_state(self, ("weights", "bias"), ("feature_scale",))

    @classmethod
    def from_state_dict(cls, state: dict) -> "LinearSVMs":
        return cls(**from_state(state, {"weights": np.float32, "bias": np.float32}, ("feature_scale",),
                                "LinearSVMs"))


def check_train_image(image: TrainImage, num_classes: int, dim: int | None) -> None:
    """Raise SVMDataError naming the image if its arrays are inconsistent."""
    n, g = len(image.boxes), len(image.gt_boxes)
    problems = []
    if image.features.ndim != 2 or image.features.shape[0] != n:
        problems.append(f"features {image.features.shape} for {n} windows")
    if image.boxes.shape != (n, 4) or image.gt_boxes.shape != (g, 4):
        problems.append(f"boxes {image.boxes.shape} / gt_boxes {image.gt_boxes.shape} not [N, 4]")
    if image.gt_features.ndim != 2 or image.gt_features.shape[0] != g:
        problems.append(f"gt_features {image.gt_features.shape} for {g} gt boxes")
    if image.gt_labels.shape != (g,) or image.gt_difficult.shape != (g,):
        problems.append(f"gt_labels {image.gt_labels.shape} / gt_difficult "
                        f"{image.gt_difficult.shape} for {g} gt boxes")
    elif g and (image.gt_labels.min() < 0 or image.gt_labels.max() >= num_classes):
        problems.append(f"gt_labels outside [0, {num_classes})")
    if not problems and dim is not None:
        for name, arr in (("features", image.features), ("gt_features", image.gt_features)):
            if arr.shape[1] != dim:
                problems.append(f"{name} have dimension {arr.shape[1]}, expected {dim}")
    if problems:
        raise SVMDataError(f"training image {image.image_id!r}: " + "; ".join(problems))


class HardNegativeTrainer:
    """The state of one SVM training run; :func:`train_svms` drives it.

    Call :meth:`collect` once, then :meth:`mine` once per round, then
    :meth:`model`. ``caches[k]`` and ``image_index`` are public for inspection.
    ``class_names`` (K names, optional) name the classes in the log.
    """

    def __init__(self, num_classes: int, cfg: SVMConfig, seed: int = 0,
                 retrain_limit: int = RETRAIN_LIMIT, max_cached_negatives: int | None = None,
                 class_names: Sequence[str] | None = None, mean_norm: float | None = None):
        _check_config(cfg)
        if mean_norm is not None and not mean_norm > 0:
            raise ValueError(f"mean_norm must be positive, got {mean_norm}")
        self.given_mean_norm = mean_norm
        if num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes, self.cfg, self.seed = num_classes, cfg, seed
        self.class_names = class_names
        self.retrain_limit = retrain_limit
        # None: the config's bound; 0 there: none.
        bound = cfg.max_negatives_per_class if max_cached_negatives is None else max_cached_negatives
        if bound < 0:
            raise ValueError(f"max_cached_negatives must be >= 0 (0 = no bound), got {bound}")
        self.max_cached_negatives = bound or UNBOUNDED
        self.rng = np.random.default_rng(seed)
        self.image_index: dict[str, int] = {}
        self.caches = [NegativeCache() for _ in range(num_classes)]
        self.positives: list[np.ndarray] = []
        self.dim: int | None = None
        self.seed_bound = UNBOUNDED  # set by collect() from the first image's feature dim
        self.feature_scale = 1.0
        self.weights = np.zeros((0, 0), np.float32)  # [K, D] once collected
        self.bias = np.zeros(num_classes, np.float32)
        self.trained = np.zeros(num_classes, dtype=bool)
        self.round = 0
        self.stats: dict = {"updates": [], "passes": [], "cache_sizes": [],
                            "max_negatives_per_class": bound,
                            "negatives_dropped_by_cap": [0] * num_classes}

    # -- pass 0 ---------------------------------------------------------------
    def collect(self, images: Iterable[TrainImage]) -> None:
        """Gather positives, the feature scale and seed negatives; train every class once."""
        start = time.perf_counter()
        pos_chunks: list[list[np.ndarray]] = [[] for _ in range(self.num_classes)]
        norm_sum, norm_count = 0.0, 0
        for image in images:
            check_train_image(image, self.num_classes, self.dim)
            if self.dim is None:
                self.dim = image.features.shape[1]
                self.seed_bound = min(self.max_cached_negatives,
                                      seed_capacity(self.cfg.seed_mb, self.num_classes, self.dim))
            index = self._index_of(image.image_id)
            if self.given_mean_norm is None:
                norm_sum += float(np.linalg.norm(all_features(image.features), axis=1).sum(dtype=np.float64))
                norm_count += len(image.features)
            use = ~image.gt_difficult.astype(bool)
            for k in np.unique(image.gt_labels[use]):
                pos_chunks[k].append(np.array(image.gt_features[use & (image.gt_labels == k)],
                                              dtype=np.float32))
            self._seed_negatives(image, index)
            if isinstance(image.features, LazyFeatures):
                image.features.release()  # this pass needs no more of its rows
        self.stats["seed_negatives"] = {
            "per_class_capacity": None if self.seed_bound == UNBOUNDED else self.seed_bound,
            "offered": [c.seen for c in self.caches], "kept": [c.size for c in self.caches]}
        if self.seed_bound == self.max_cached_negatives:  # the cache bound, not the seed budget, binds
            for k, cache in enumerate(self.caches):  # what the reservoir left out
                self.stats["negatives_dropped_by_cap"][k] += cache.seen - cache.size
        if self.given_mean_norm is not None:
            mean_norm = self.given_mean_norm
        elif norm_count == 0 or norm_sum <= 0:
            raise SVMDataError("SVM training saw no proposal windows with non-zero features")
        else:
            mean_norm = norm_sum / norm_count
        self.feature_scale = self.cfg.target_norm / mean_norm
        self.positives = [np.concatenate(c) if c else np.zeros((0, self.dim), np.float32)
                          for c in pos_chunks]
        self.weights = np.zeros((self.num_classes, self.dim), np.float32)
        for k in range(self.num_classes):
            if len(self.positives[k]) == 0:
                log.warning("SVM %s has no (non-difficult) positives: it will never fire", self._label(k))
            elif self.caches[k].size:
                self._update(k, image_number=None)
            else:
                log.info("SVM %s has no seed negatives; mining will start it", self._label(k))
        self.stats.update(mean_norm=mean_norm, mean_norm_given=self.given_mean_norm is not None,
                          feature_scale=self.feature_scale,
                          feature_dim=self.dim, num_images=len(self.image_index),
                          num_positives=[len(p) for p in self.positives])
        self._end_pass("collect", start)

    def _seed_negatives(self, image: TrainImage, index: int) -> None:
        if self.cfg.initial_negatives == 0:
            return
        boxes = np.concatenate([image.boxes, image.gt_boxes]).astype(np.float32)
        cand = find_negative_candidates(boxes, image.gt_boxes, image.gt_labels,
                                        self.num_classes, self.cfg.neg_iou, self.cfg.neg_iou_strict)
        distinct = self._distinct(_window_features(image)) if self.cfg.neg_dedup == "identical" else None
        # No model yet: every score is 0 and the NMS keeps window order. For the
        # classes absent from the image all windows are candidates, so one NMS
        # serves them all. The reservoir decides which rows it keeps from the row
        # counts alone; only those rows' features are then computed, once for all classes.
        kept_all = None
        plans = []
        for k in range(self.num_classes):
            if cand[:, k].all():
                if kept_all is None:
                    kept_all = self._deduplicated(np.arange(len(boxes)), boxes, np.zeros(len(boxes)), distinct)
                idx = kept_all
            else:
                idx = np.flatnonzero(cand[:, k])
                idx = self._deduplicated(idx, boxes, np.zeros(len(idx)), distinct)
            if len(idx) > self.cfg.initial_negatives:
                idx = np.sort(self.rng.choice(idx, self.cfg.initial_negatives, replace=False))
            if len(idx):
                plans.append((k, idx, self.caches[k].plan_reservoir(len(idx), self.seed_bound, self.rng)))
        if not plans:
            return
        needed = np.unique(np.concatenate([idx[plan.rows] for _, idx, plan in plans]))
        feats = _window_rows(image, needed)
        for k, idx, plan in plans:
            rows = feats[np.searchsorted(needed, idx[plan.rows])]
            self.caches[k].apply_reservoir(plan, rows, index * KEY_STRIDE + idx)

    def _distinct(self, feats: np.ndarray) -> np.ndarray | None:
        """With ``svm.neg_dedup=identical``: the image's windows that are the first of their
        identical feature vectors (the official dedup, computed over all its windows)."""
        return first_of_identical(feats) if self.cfg.neg_dedup == "identical" else None

    def _deduplicated(self, idx: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
                      distinct: np.ndarray | None) -> np.ndarray:
        """One class's candidate negatives ``idx`` (with their ``scores``) less their duplicates:
        those not in ``distinct`` (``neg_dedup=identical``) or suppressed at IoU > ``neg_nms``."""
        if distinct is not None:
            return idx[np.isin(idx, distinct)]
        return idx[suppress_overlapping_negatives(boxes[idx], scores, self.cfg.neg_nms)]

    # -- mining rounds ----------------------------------------------------------
    def mine(self, images: Iterable[TrainImage]) -> None:
        """One hard-negative mining pass; every trainable class is retrained at its end."""
        if self.dim is None:
            raise RuntimeError("HardNegativeTrainer.mine() called before collect()")
        start = time.perf_counter()
        self.round += 1
        has_pos = np.array([len(p) > 0 for p in self.positives])
        added = np.zeros(self.num_classes, np.int64)
        for number, image in enumerate(images):
            check_train_image(image, self.num_classes, self.dim)
            index = self._index_of(image.image_id)
            boxes = np.concatenate([image.boxes, image.gt_boxes]).astype(np.float32)
            feats = _window_features(image)
            # An untrained class scores 0 everywhere (w = 0), so all its
            # candidates count as hard: R-CNN's first_time behaviour.
            scores = (feats @ self.weights.T) * np.float32(self.feature_scale) + self.bias
            cand = find_negative_candidates(boxes, image.gt_boxes, image.gt_labels,
                                            self.num_classes, self.cfg.neg_iou, self.cfg.neg_iou_strict)
            distinct = self._distinct(feats)
            for k in np.flatnonzero(has_pos):
                # Thresholding before the NMS keeps the same windows as after
                # it (a hard window can only be suppressed by a harder one)
                # and leaves the NMS only the few hard candidates.
                idx = np.flatnonzero(cand[:, k] & (scores[:, k] > self.cfg.hard_threshold))
                idx = self._deduplicated(idx, boxes, scores[idx, k], distinct)
                keys = index * KEY_STRIDE + idx
                new = ~self.caches[k].contains(keys)
                if new.any():
                    self.caches[k].add(feats[idx[new]], keys[new])
                    added[k] += int(new.sum())
                if self.caches[k].size and (not self.trained[k]
                                            or self.caches[k].num_added > self.retrain_limit):
                    self._update(k, image_number=number)
        for k in np.flatnonzero(has_pos):
            if self.caches[k].size:
                self._update(k, image_number=None)
        self.stats.setdefault("hard_negatives_added", []).append(added.tolist())
        self._end_pass(f"mining round {self.round}", start)

    # -- solver -----------------------------------------------------------------
    def _update(self, k: int, image_number: int | None) -> None:
        """Retrain class k on its positives and cache, then evict easy negatives."""
        start = time.perf_counter()
        cache = self.caches[k]
        x_neg, _ = cache.arrays()
        pos, num_pos, num_neg = self.positives[k], len(self.positives[k]), cache.size
        x = np.concatenate([pos, x_neg], dtype=np.float64)  # liblinear works in float64 (one copy, not two)
        x *= self.feature_scale
        y = np.concatenate([np.ones(num_pos), -np.ones(num_neg)])
        svc = LinearSVC(loss="hinge", dual=True, C=self.cfg.C,
                        class_weight={1: self.cfg.pos_weight, -1: 1.0},
                        fit_intercept=True, intercept_scaling=self.cfg.bias_multiplier,
                        random_state=self.seed, max_iter=SOLVER_MAX_ITER)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            svc.fit(x, y)
        converged = True
        for caught_warning in caught:
            if issubclass(caught_warning.category, ConvergenceWarning):
                converged = False
            else:  # not ours to swallow
                warnings.warn_explicit(caught_warning.message, caught_warning.category,
                                       caught_warning.filename, caught_warning.lineno)
        if not converged:
            log.warning("SVM %s: liblinear did not converge in %d iterations",
                        self._label(k), SOLVER_MAX_ITER)
        w, b = svc.coef_[0], float(svc.intercept_[0])
        self.weights[k], self.bias[k], self.trained[k] = w, b, True
        z = x @ w + b
        z_pos, z_neg = z[:num_pos], z[num_pos:]
        # rcnn_train.m's objective: liblinear regularises the bias feature too.
        pos_loss = self.cfg.C * self.cfg.pos_weight * float(np.maximum(0, 1 - z_pos).sum())
        neg_loss = self.cfg.C * float(np.maximum(0, 1 + z_neg).sum())
        reg_loss = 0.5 * float(w @ w) + 0.5 * (b / self.cfg.bias_multiplier) ** 2
        keep = z_neg >= self.cfg.evict_threshold
        if keep.sum() > self.max_cached_negatives:
            # Over the bound: keep the hardest (highest-scoring) negatives.
            hardest = np.argsort(-np.where(keep, z_neg, -np.inf), kind="stable")
            self.stats["negatives_dropped_by_cap"][k] += int(keep.sum()) - self.max_cached_negatives
            keep = np.zeros_like(keep)
            keep[hardest[: self.max_cached_negatives]] = True
        cache.keep(keep)
        cache.num_added = 0
        self.stats["updates"].append({
            "class": int(k), "round": self.round, "image": image_number,
            "num_pos": num_pos, "num_neg": num_neg, "num_neg_kept": cache.size,
            "pos_loss": pos_loss, "neg_loss": neg_loss, "reg_loss": reg_loss,
            "objective": pos_loss + neg_loss + reg_loss, "converged": converged,
            "seconds": time.perf_counter() - start})
        log.debug("SVM %s: %d pos, %d neg -> %d kept, objective %.4f",
                  self._label(k), num_pos, num_neg, cache.size, pos_loss + neg_loss + reg_loss)

    # -- helpers ----------------------------------------------------------------
    def _label(self, k: int) -> str:
        return class_label(k, self.class_names)

    def _index_of(self, image_id: str) -> int:
        return self.image_index.setdefault(image_id, len(self.image_index))

    def _end_pass(self, name: str, start: float) -> None:
        self.stats["passes"].append({"name": name, "seconds": time.perf_counter() - start})
        self.stats["cache_sizes"].append([c.size for c in self.caches])

    def model(self) -> LinearSVMs:
        """The current SVMs; untrained classes get zero weights and bias -inf."""
        bias = np.where(self.trained, self.bias, -np.inf).astype(np.float32)
        weights = np.where(self.trained[:, None], self.weights, 0).astype(np.float32)
        return LinearSVMs(weights=weights, bias=bias, feature_scale=float(self.feature_scale))


def _window_features(image: TrainImage) -> np.ndarray:
    """Features of all windows, proposals then gt boxes: float32 [N + G, D]."""
    return np.concatenate([all_features(image.features), image.gt_features]).astype(np.float32, copy=False)


def _window_rows(image: TrainImage, idx: np.ndarray) -> np.ndarray:
    """Features of windows ``idx`` (sorted; proposals then gt boxes, as :func:`_window_features`)."""
    n = len(image.features)
    split = int(np.searchsorted(idx, n))
    parts = [feature_rows(image.features, idx[:split]), image.gt_features[idx[split:] - n]]
    return np.concatenate(parts).astype(np.float32, copy=False)


def _check_config(cfg: SVMConfig) -> None:
    for name in ("C", "pos_weight", "bias_multiplier", "target_norm"):
        if not getattr(cfg, name) > 0:
            raise ValueError(f"svm.{name} must be positive, got {getattr(cfg, name)}")
    if not 0 <= cfg.neg_iou <= 1 or not 0 <= cfg.neg_nms <= 1:
        raise ValueError("svm.neg_iou and svm.neg_nms must lie in [0, 1]")
    if cfg.mining_rounds < 0 or cfg.initial_negatives < 0:
        raise ValueError("svm.mining_rounds and svm.initial_negatives must be >= 0")
    if cfg.evict_threshold > cfg.hard_threshold:
        raise ValueError("svm.evict_threshold must not exceed svm.hard_threshold, or freshly "
                         "mined negatives would be evicted")


def train_svms(images: Callable[[], Iterable[TrainImage]], num_classes: int, cfg: SVMConfig,
               seed: int = 0, progress: bool = True, retrain_limit: int = RETRAIN_LIMIT,
               max_cached_negatives: int | None = None,
               class_names: Sequence[str] | None = None,
               mean_norm: float | None = None) -> tuple[LinearSVMs, dict]:
    """Train one linear SVM per class with hard-negative mining.

    Args:
        images: returns a fresh iterator over the training images; called
            ``1 + cfg.mining_rounds`` times, and must yield the same windows
            in the same order each time (cache keys are (image_id, window index)).
        num_classes: K; gt_labels index [0, K).
        cfg: the ``svm`` config section.
        seed: seeds the seed-negative sampling and liblinear's shuffling.
        retrain_limit: retrain a class after this many new negatives (R-CNN: 2000).
        max_cached_negatives: per-class cache bound after eviction; None: the
            config's ``max_negatives_per_class`` (0 = no bound).
        class_names: the K class names, for the log (None: classes named by index).
        mean_norm: the features' mean L2 norm, measured elsewhere (svm.norm_windows=random);
            None: the exact mean over every proposal window, in the collect pass.
    Returns:
        (the SVMs, training statistics: JSON-serialisable plain types).
    """
    trainer = HardNegativeTrainer(num_classes, cfg, seed, retrain_limit, max_cached_negatives, class_names,
                                  mean_norm)
    with closing(adapting_threads(progress_of(images(), desc="SVM collect", unit="img", enabled=progress))) as todo:
        trainer.collect(todo)
    for r in range(cfg.mining_rounds):
        with closing(adapting_threads(progress_of(images(), desc=f"SVM mining {r + 1}/{cfg.mining_rounds}",
                                                  unit="img", total=len(trainer.image_index),
                                                  enabled=progress))) as todo:
            trainer.mine(todo)
    sizes = trainer.stats["cache_sizes"][-1]
    trainer.stats["negative_cap_bound"] = any(trainer.stats["negatives_dropped_by_cap"])
    log.info("SVMs trained: %d updates, final cache sizes %s", len(trainer.stats["updates"]), sizes)
    return trainer.model(), trainer.stats
