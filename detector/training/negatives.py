"""Hard negatives of the SVM stage: which windows may be negatives, per-image
suppression among them, and the per-class cache the mining keeps them in.

The rules are R-CNN's ``rcnn_train.m`` (see :mod:`detector.training.svm`, which uses them).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..boxes import as_box_tensor, box_iou, nms


class NegativeCache:
    """One class's cached negatives: unscaled float32 features and int64 keys.

    Rows arrive in chunks (one per image) and are concatenated lazily, so
    growing the cache costs no quadratic copying.
    """

    def __init__(self):
        self._x: list[np.ndarray] = []
        self._keys: list[np.ndarray] = []
        self._key_set: set[int] = set()
        self.size = 0
        self.num_added = 0  # since the last update (rcnn_train.m's num_added)
        self.seen = 0  # candidates offered to add_reservoir so far

    def contains(self, keys: np.ndarray) -> np.ndarray:
        """bool [n]: which keys are already cached."""
        return np.fromiter((int(k) in self._key_set for k in keys), dtype=bool, count=len(keys))

    def add(self, x: np.ndarray, keys: np.ndarray) -> None:
        """Append rows x [n, D] with their (new, distinct) keys [n]."""
        self._x.append(np.array(x, dtype=np.float32))
        self._keys.append(np.asarray(keys, dtype=np.int64))
        self._key_set.update(int(k) for k in keys)
        self.size += len(keys)
        self.num_added += len(keys)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """All rows and keys as two arrays ([size, D] float32, [size] int64)."""
        if len(self._x) > 1:
            self._x, self._keys = [np.concatenate(self._x)], [np.concatenate(self._keys)]
        if not self._x:
            return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
        return self._x[0], self._keys[0]

    def keep(self, mask: np.ndarray) -> None:
        """Keep only the rows where mask [size] is True (order preserved)."""
        x, keys = self.arrays()
        if len(x):
            self._x, self._keys = [x[mask]], [keys[mask]]
        self._key_set = set(int(k) for k in self._keys[0]) if self._keys else set()
        self.size = len(self._key_set)

    def add_reservoir(self, x: np.ndarray, keys: np.ndarray, capacity: int,
                      rng: np.random.Generator) -> None:
        """Offer rows to a uniform reservoir sample of at most ``capacity`` rows
        (Vitter's algorithm R over the stream of all rows ever offered)."""
        plan = self.plan_reservoir(len(keys), capacity, rng)
        self.apply_reservoir(plan, x[plan.rows], keys)

    def plan_reservoir(self, n: int, capacity: int, rng: np.random.Generator) -> "ReservoirPlan":
        """Which of ``n`` offered rows :meth:`add_reservoir` would keep, and where, decided
        before their features exist (the draws depend on the counts alone). Apply it with
        :meth:`apply_reservoir` before this cache's next plan."""
        room = max(0, min(n, capacity - self.size))
        slots = src = np.zeros(0, dtype=np.int64)
        if n > room:
            position = self.seen + np.arange(room, n)  # 0-based stream positions
            slot = rng.integers(0, position + 1)
            taken = np.flatnonzero(slot < capacity)
            if len(taken):
                # A later row that draws the same slot overwrites an earlier one.
                slots, last = np.unique(slot[taken][::-1], return_index=True)
                src = room + taken[::-1][last]
        return ReservoirPlan(offered=n, room=room, slots=slots, src=src, seen=self.seen, size=self.size)

    def apply_reservoir(self, plan: "ReservoirPlan", x: np.ndarray, keys: np.ndarray) -> None:
        """Carry out ``plan``: ``x`` holds the features of ``plan.rows`` (in that order),
        ``keys`` the keys of all ``plan.offered`` rows."""
        if (plan.seen, plan.size) != (self.seen, self.size):
            raise ValueError("reservoir plan drawn for another state of this cache (apply each plan "
                             "before the next is drawn)")
        if len(x) != len(plan.rows) or len(keys) != plan.offered:
            raise ValueError(f"reservoir plan of {plan.offered} rows keeping {len(plan.rows)}: "
                             f"got {len(x)} feature rows and {len(keys)} keys")
        if plan.room:
            self.add(x[:plan.room], keys[:plan.room])
        if len(plan.src):
            cached_x, cached_keys = self.arrays()
            self._key_set.difference_update(int(k) for k in cached_keys[plan.slots])
            cached_x[plan.slots] = x[plan.room:]
            cached_keys[plan.slots] = keys[plan.src]
            self._key_set.update(int(k) for k in keys[plan.src])
        self.seen += plan.offered
        self.num_added = self.size


@dataclass(frozen=True)
class ReservoirPlan:
    """One offer to a reservoir (:meth:`NegativeCache.plan_reservoir`): the first ``room``
    rows are appended, then cache rows ``slots`` are overwritten by offered rows ``src``."""

    offered: int
    room: int
    slots: np.ndarray  # int64 cache rows, ascending
    src: np.ndarray  # int64 offered rows, one per slot
    seen: int  # the cache's counts the plan was drawn from
    size: int

    @property
    def rows(self) -> np.ndarray:
        """The offered rows whose features the cache keeps: the appended ones, then ``src``."""
        return np.concatenate([np.arange(self.room, dtype=np.int64), self.src])


def find_negative_candidates(boxes: np.ndarray, gt_boxes: np.ndarray, gt_labels: np.ndarray,
                             num_classes: int, neg_iou: float, strict: bool = False) -> np.ndarray:
    """Which windows may be negatives of which class.

    Args:
        boxes: [M, 4] windows; gt_boxes: [G, 4]; gt_labels: [G] in [0, K).
        strict: IoU < neg_iou instead of <= (the official spp_train.m:280).
    Returns:
        bool [M, K]: True where the window's IoU with every ground-truth box of
        that class is <= neg_iou (< with ``strict``; always True for classes
        absent from the image).
    """
    candidates = np.ones((len(boxes), num_classes), dtype=bool)
    if len(boxes) == 0 or len(gt_boxes) == 0:
        return candidates
    iou = box_iou(as_box_tensor(boxes), as_box_tensor(gt_boxes)).numpy()
    below = np.less if strict else np.less_equal
    for k in np.unique(gt_labels):
        candidates[:, k] = below(iou[:, gt_labels == k].max(axis=1), neg_iou)
    return candidates


def first_of_identical(features: np.ndarray) -> np.ndarray:
    """Sorted int64 indices of the first row of each group of identical rows of ``features`` [M, D].

    The official spp_train.m:261-263 (``dedup = true``) pools one window per
    cell range and scale; two such windows have identical pooled features,
    so keeping one row per identical vector keeps the same negatives (it
    also merges two different cell ranges that happen to pool the same
    vector, which teaches the SVM nothing new either).
    """
    if len(features) == 0:
        return np.zeros(0, dtype=np.int64)
    rows = np.ascontiguousarray(features).view(np.dtype((np.void, features.dtype.itemsize * features.shape[1])))
    _, first = np.unique(rows.ravel(), return_index=True)
    return np.sort(first).astype(np.int64)


def suppress_overlapping_negatives(boxes: np.ndarray, scores: np.ndarray,
                                   iou_threshold: float) -> np.ndarray:
    """Greedy NMS among one class's candidate negatives of one image.

    Keeps the highest-scoring window of every group overlapping by IoU >
    ``iou_threshold``; equal scores keep the lower index. boxes: [M, 4],
    scores: [M]. Returns sorted int64 indices of the kept windows.
    """
    m = len(boxes)
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    # torchvision's nms does not promise an order among ties, so hand it
    # distinct rank scores (exact in float32 below 2**24 windows).
    order = np.lexsort((np.arange(m), -np.asarray(scores, dtype=np.float64)))
    rank = np.empty(m, dtype=np.float32)
    rank[order] = np.arange(m, 0, -1, dtype=np.float32)
    keep = nms(as_box_tensor(boxes), torch.from_numpy(rank), iou_threshold).numpy()
    return np.sort(keep).astype(np.int64)
