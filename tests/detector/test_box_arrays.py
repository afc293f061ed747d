"""detector/box_arrays.py (numpy, for the torch-free paths) against detector/boxes.py and torchvision."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from detector.box_arrays import (TORCHVISION_PER_LABEL_ABOVE, batched_nms_array, clip_box_array,
                                 decode_box_array, nms_array, rank_within_labels, valid_box_mask)
from detector.boxes import batched_nms, clip_boxes, decode_boxes, rank_within_label, valid_boxes
from helpers import random_boxes


def tied_case(seed: int, n: int, levels: int = 4):
    """Boxes on a coarse lattice (many identical boxes and IoUs) with scores from a few values (ties)."""
    rng = np.random.default_rng(seed)
    boxes = np.round(random_boxes(rng, n, extent=60.0, min_side=2.0, max_side=30.0) / 4) * 4
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 4)
    scores = rng.integers(0, levels, n).astype(np.float32) / levels
    return boxes.astype(np.float32), scores


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7])
def test_nms_equals_torchvision_with_ties(seed, threshold):
    boxes, scores = tied_case(seed, 300)
    want = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), threshold).numpy()
    np.testing.assert_array_equal(nms_array(boxes, scores, threshold), want)


def test_nms_on_random_boxes_and_degenerate_ones():
    rng = np.random.default_rng(7)
    boxes = random_boxes(rng, 500, extent=200.0)
    boxes[:20, 2] = boxes[:20, 0]  # zero width: IoU 0/0 with each other, never suppressed
    scores = rng.random(500).astype(np.float32)
    want = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.4).numpy()
    np.testing.assert_array_equal(nms_array(boxes, scores, 0.4), want)
    assert nms_array(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5).shape == (0,)


@pytest.mark.parametrize("n", [50, TORCHVISION_PER_LABEL_ABOVE // 4 + 200])  # both of torchvision's paths
@pytest.mark.parametrize("max_per_label", [0, 3])
def test_batched_nms_equals_detector_boxes(n, max_per_label):
    for seed in range(3):
        boxes, scores = tied_case(seed, n)
        labels = np.random.default_rng(seed + 10).integers(0, 3, n)
        want = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(labels), 0.45,
                           max_per_label).numpy()
        np.testing.assert_array_equal(batched_nms_array(boxes, scores, labels, 0.45, max_per_label), want)


def test_rank_within_labels_equals_torch():
    labels = np.random.default_rng(1).integers(0, 4, 50)
    np.testing.assert_array_equal(rank_within_labels(labels), rank_within_label(torch.from_numpy(labels)).numpy())


def test_clip_valid_and_decode_equal_torch():
    rng = np.random.default_rng(2)
    boxes = random_boxes(rng, 200, extent=120.0, min_side=0.0, max_side=40.0) - 10
    t = torch.from_numpy(boxes)
    np.testing.assert_array_equal(clip_box_array(boxes, 100.0, 90.0), clip_boxes(t, 100.0, 90.0).numpy())
    for min_size in (0.0, 5.0):
        np.testing.assert_array_equal(valid_box_mask(boxes, min_size), valid_boxes(t, min_size).numpy())
    windows = random_boxes(rng, 200, extent=100.0, min_side=2.0)
    deltas = rng.normal(scale=0.5, size=(200, 4)).astype(np.float32)
    deltas[0, 2] = 50.0  # clamped before exp
    got = decode_box_array(windows, deltas)
    want = decode_boxes(torch.from_numpy(windows), torch.from_numpy(deltas)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-4)


def test_distinct_rows_finds_exact_copies_only():
    from detector.features.distinct import distinct_rows

    rng = np.random.default_rng(3)
    base = rng.normal(size=(50, 300)).astype(np.float32)
    rows = base[rng.integers(0, 50, 200)]
    rows[-1] = rows[0]
    rows[-1, 1] += 1.0  # same probe columns (0 and the spread ones skip column 1), another row
    first, inverse = distinct_rows(rows)
    np.testing.assert_array_equal(rows[first][inverse], rows)
    assert len(first) == len(np.unique(rows, axis=0)) and (np.diff(first) > 0).all()
    assert distinct_rows(np.zeros((0, 5), np.float32))[0].shape == (0,)
