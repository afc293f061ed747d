"""proposals.recall and proposals.report: hand-computed cases and a brute-force reference."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from detector.records import ImageRecord
from helpers import brute_iou
from helpers import random_boxes as helpers_random_boxes
from proposals.recall import best_overlaps, evaluate_proposals
from proposals.report import CURVE_PNG, REPORT_JSON, REPORT_MD, write_report


def iou_py(a, b) -> float:
    """Plain-Python IoU of two (x1, y1, x2, y2) boxes, the reference."""
    return float(brute_iou([a], [b])[0, 0])


def random_boxes(rng, n):
    return helpers_random_boxes(rng, n, extent=80, min_side=5, max_side=60)


def test_best_overlaps_matches_brute_force():
    rng = np.random.default_rng(3)
    gt, win = random_boxes(rng, 7), random_boxes(rng, 40)
    counts = [1, 3, 10, 40, 100]
    got = best_overlaps(gt, win, counts)
    for g in range(len(gt)):
        for k, n in enumerate(counts):
            ref = max(iou_py(gt[g], w) for w in win[:n])
            assert got[g, k] == pytest.approx(ref, abs=1e-6)
    assert best_overlaps(gt, np.zeros((0, 4), np.float32), counts).sum() == 0
    assert best_overlaps(np.zeros((0, 4), np.float32), win, counts).shape == (0, 5)


def record(image_id, boxes, labels, difficult=None):
    boxes = np.asarray(boxes, np.float32)
    difficult = np.zeros(len(boxes), bool) if difficult is None else np.asarray(difficult)
    return ImageRecord(image_id, Path(f"{image_id}.jpg"), 100, 100, boxes,
                       np.asarray(labels, np.int64), difficult)


def hand_case():
    records = [
        record("a", [[0, 0, 10, 10], [50, 50, 70, 70]], [0, 1]),
        record("b", [[0, 0, 20, 10], [30, 30, 40, 40]], [0, 0], difficult=[False, True]),
        record("c", [[10, 10, 30, 30]], [1]),  # no proposals given for "c"
    ]
    proposals = {
        # box 1: IoU 1.0 at window 2; box 2: IoU 0.5 exactly (window [50,50,70,60]).
        "a": np.array([[50, 50, 70, 60], [0, 0, 10, 10]], np.float32),
        # box 1: IoU 0.75 ([0,0,15,10]).
        "b": np.array([[0, 0, 15, 10]], np.float32),
    }
    return records, proposals


def test_recall_abo_and_curve_by_hand():
    records, proposals = hand_case()
    r = evaluate_proposals(records, proposals, ["cat", "dog"], window_counts=(1, 2))
    # 4 boxes count (the difficult one is out): best overlaps 1.0, 0.5, 0.75, 0.0.
    assert r.num_gt == 4 and r.num_images == 3
    assert r.recall_at(0.5) == pytest.approx(3 / 4)
    assert r.recall_at(0.55) == pytest.approx(2 / 4)
    assert r.recall_at(0.75) == pytest.approx(2 / 4)
    assert r.recall_at(0.8) == pytest.approx(1 / 4)
    assert r.recall_at(0.95) == pytest.approx(1 / 4)
    # First window only: box1 of "a" is 0 (window 1 misses it), box2 0.5, "b" 0.75.
    assert r.recall_vs_windows == pytest.approx([2 / 4, 3 / 4])
    assert r.abo_per_class == pytest.approx({"cat": (1.0 + 0.75) / 2, "dog": (0.5 + 0.0) / 2})
    assert r.mabo == pytest.approx((0.875 + 0.25) / 2)
    assert r.missing_images == ["c"]
    assert r.windows_per_image == pytest.approx((2 + 1 + 0) / 3)
    assert r.average_recall == pytest.approx(np.mean(r.recall_at_iou))


def test_max_windows_and_difficult_options():
    records, proposals = hand_case()
    r1 = evaluate_proposals(records, proposals, ["cat", "dog"], max_windows=1)
    assert r1.recall_at(0.5) == pytest.approx(2 / 4)
    r_all = evaluate_proposals(records, proposals, ["cat", "dog"], include_difficult=True)
    assert r_all.num_gt == 5 and r_all.recall_at(0.5) == pytest.approx(3 / 5)


def test_report_files_are_written(tmp_path):
    records, proposals = hand_case()
    r = evaluate_proposals(records, proposals, ["cat", "dog"])
    md = write_report(r, tmp_path / "rep", "toy/test", {"seconds_per_image_mean": 0.5,
                                                       "wall_seconds": 2.0, "workers": 2},
                      {"method": "opencv_fast"})
    text = md.read_text()
    assert "| dog | 0.250 |" in text and "**MABO**" in text and "Images without proposals" in text
    assert "recall@0.5" in text and "0.750" in text
    data = json.loads((tmp_path / "rep" / REPORT_JSON).read_text())
    assert data["recall_at_iou"][0] == pytest.approx(0.75)
    assert data["abo_per_class"]["dog"] == pytest.approx(0.25)
    png = (tmp_path / "rep" / CURVE_PNG).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    assert (tmp_path / "rep" / REPORT_MD).is_file()
