"""detector/training/negatives.py: R-CNN's negative rules, their suppression and the per-class cache."""
import numpy as np
import pytest

from detector.boxes import as_box_tensor, box_iou
from detector.training.negatives import NegativeCache, find_negative_candidates, suppress_overlapping_negatives


def test_find_negative_candidates_iou_rule():
    gt = np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    labels = np.array([0, 1])
    boxes = np.array([[0, 0, 10, 28.57], [0, 0, 10, 33.3334], [0, 0, 10, 40], [50, 50, 60, 60]],
                     np.float32)
    iou = box_iou(as_box_tensor(boxes), as_box_tensor(gt[:1])).numpy()[:, 0]
    assert iou[0] == pytest.approx(0.35, abs=1e-3) and iou[1] == pytest.approx(0.3, abs=1e-4)
    assert iou[1] <= 0.3 and iou[2] == pytest.approx(0.25)
    cand = find_negative_candidates(boxes, gt, labels, 3, neg_iou=0.3)
    np.testing.assert_array_equal(cand, [[False, True, True], [True, True, True],
                                         [True, True, True], [True, False, True]])
    assert find_negative_candidates(boxes, gt[:0], labels[:0], 3, 0.3).all()


def test_suppress_overlapping_negatives():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 11], [100, 0, 110, 10], [0, 0, 10, 14.5],
                      [0, 0, 10, 14]], np.float32)
    # IoU with box 0: box 1 10/11, box 3 0.69 (kept at 0.7), box 4 0.714 (suppressed).
    assert suppress_overlapping_negatives(boxes, np.array([2.0, 1.0, 0.0, -5.0, -5.0]),
                                          0.7).tolist() == [0, 2, 3]
    # The higher score wins: box 1 suppresses boxes 0, 3 (IoU 0.76) and 4 (0.79).
    assert suppress_overlapping_negatives(boxes, np.array([0.0, 1.0, 0.0, -5.0, -5.0]),
                                          0.7).tolist() == [1, 2]
    # Ties keep the lower index.
    assert suppress_overlapping_negatives(boxes, np.zeros(5), 0.7).tolist() == [0, 2, 3]
    assert suppress_overlapping_negatives(boxes, np.zeros(5), 1.0).tolist() == [0, 1, 2, 3, 4]
    assert suppress_overlapping_negatives(boxes[:0], np.zeros(0), 0.7).tolist() == []


def test_cache_add_contains_keep_and_counters():
    cache = NegativeCache()
    assert cache.size == 0 and cache.arrays()[0].shape[0] == 0
    cache.add(np.ones((2, 3), np.float32), np.array([5, 7]))
    cache.add(2 * np.ones((1, 3), np.float32), np.array([9]))
    assert cache.size == 3 and cache.num_added == 3
    assert cache.contains(np.array([5, 6, 9])).tolist() == [True, False, True]
    cache.keep(np.array([True, False, True]))
    x, keys = cache.arrays()
    assert keys.tolist() == [5, 9] and x[:, 0].tolist() == [1.0, 2.0]
    assert cache.size == 2 and not cache.contains(np.array([7]))[0]  # evicted keys can come back


def test_reservoir_is_bounded_consistent_and_uniform():
    cache, rng = NegativeCache(), np.random.default_rng(0)
    for start in range(0, 1000, 10):
        keys = np.arange(start, start + 10)
        cache.add_reservoir(keys[:, None].astype(np.float32), keys, 100, rng)
    x, keys = cache.arrays()
    assert cache.size == 100 and len(np.unique(keys)) == 100
    np.testing.assert_array_equal(x[:, 0], keys)  # rows stay with their keys
    assert cache.contains(keys).all() and not cache.contains(np.array([1000, -1])).any()
    assert 350 < keys.mean() < 650  # uniform over the stream 0..999, not the first 100


def reference_add_reservoir(cache: NegativeCache, x, keys, capacity, rng) -> bool:
    """The algorithm R of add_reservoir before it was split into plan + apply (kept here as the
    reference); True when a slot it overwrote held a row appended by this same call."""
    n = len(keys)
    room = max(0, min(n, capacity - cache.size))
    old_size = cache.size
    if room:
        cache.add(x[:room], keys[:room])
    overlap = False
    if n > room:
        position = cache.seen + np.arange(room, n)
        slot = rng.integers(0, position + 1)
        taken = np.flatnonzero(slot < capacity)
        if len(taken):
            slots, last = np.unique(slot[taken][::-1], return_index=True)
            src = room + taken[::-1][last]
            overlap = bool(room and (slots >= old_size).any())
            cached_x, cached_keys = cache.arrays()
            cache._key_set.difference_update(int(k) for k in cached_keys[slots])
            cached_x[slots] = x[src]
            cached_keys[slots] = keys[src]
            cache._key_set.update(int(k) for k in keys[src])
    cache.seen += n
    cache.num_added = cache.size
    return overlap


def test_reservoir_plan_needs_only_the_rows_it_keeps():
    # The plan is drawn from the counts alone; applied with the kept rows' features it leaves
    # the cache the reference algorithm leaves with every row's, including calls that fill
    # the last room and overwrite rows they just appended.
    whole, planned = NegativeCache(), NegativeCache()
    rng_whole, rng_planned = np.random.default_rng(3), np.random.default_rng(3)
    asked, overlaps = 0, 0
    for start in range(0, 600, 20):
        keys = np.arange(start, start + 20)
        x = np.stack([keys, -keys], axis=1).astype(np.float32)
        overlaps += reference_add_reservoir(whole, x, keys, 50, rng_whole)
        plan = planned.plan_reservoir(len(keys), 50, rng_planned)
        asked += len(plan.rows)
        planned.apply_reservoir(plan, x[plan.rows], keys)
        for a, b in zip(whole.arrays(), planned.arrays()):
            np.testing.assert_array_equal(a, b)
    assert overlaps >= 1  # the 40-60 call: 10 rows of room, then slots among them
    assert whole.seen == planned.seen == 600 and planned.size == 50
    assert 50 <= asked < 300  # most of the 600 offered rows were never needed
    plan = planned.plan_reservoir(5, 50, rng_planned)
    with pytest.raises(ValueError, match="reservoir plan of 5"):
        planned.apply_reservoir(plan, np.zeros((len(plan.rows) + 1, 2), np.float32), np.arange(5))
    planned.apply_reservoir(plan, np.zeros((len(plan.rows), 2), np.float32), np.arange(5))
    with pytest.raises(ValueError, match="another state"):  # a stale plan
        planned.apply_reservoir(plan, np.zeros((len(plan.rows), 2), np.float32), np.arange(5))
