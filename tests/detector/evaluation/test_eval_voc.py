"""Tests of detector.evaluation.voc_ap: hand-worked cases and a devkit port."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from detector.boxes import box_iou
from detector.evaluation.voc_ap import EvaluationInputError, evaluate_voc, voc_ap
from detector.records import Detections, ImageRecord

CLASSES = ("cat", "dog", "bird")


def rec(image_id, boxes, labels, difficult=None):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    difficult = np.zeros(len(boxes), bool) if difficult is None else np.asarray(difficult, bool)
    return ImageRecord(image_id, Path(f"{image_id}.jpg"), 100, 100, boxes,
                       np.asarray(labels, np.int64), difficult)


def det(boxes, scores, labels):
    return Detections(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32),
                      np.asarray(labels, np.int64))


A = [0, 0, 10, 10]
B = [50, 50, 70, 70]
FAR = [80, 0, 90, 10]  # overlaps neither A nor B


# ---------------------------------------------------------------- voc_ap ---

def test_voc_ap_empty_curve_is_zero():
    assert voc_ap(np.zeros(0), np.zeros(0), True) == 0.0
    assert voc_ap(np.zeros(0), np.zeros(0), False) == 0.0


def test_voc_ap_hand_curve_07_vs_12():
    # rec [.5, .5, 1], prec [1, .5, 2/3].
    # 07: thresholds 0..0.5 (6 of them) see max precision 1; 0.6..1.0 (5) see 2/3:
    #     (6 * 1 + 5 * 2/3) / 11 = 9.3333 / 11 = 0.848485
    # 12: interpolated precision is 1 up to recall .5, 2/3 up to 1:
    #     0.5 * 1 + 0.5 * 2/3 = 0.833333
    rec_, prec_ = np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])
    assert voc_ap(rec_, prec_, True) == pytest.approx((6 + 5 * 2 / 3) / 11)
    assert voc_ap(rec_, prec_, False) == pytest.approx(0.5 + 1 / 3)


# ------------------------------------------------------ evaluate_voc cases ---

@pytest.mark.parametrize("use07", [True, False])
def test_perfect_detector_ap_one(use07):
    gts = [rec("a", [A, B], [0, 1]), rec("b", [B], [2])]
    dets = {"a": det([B, A], [0.9, 0.8], [1, 0]), "b": det([B], [0.7], [2])}
    r = evaluate_voc(gts, dets, CLASSES, use_07_metric=use07)
    # 07: eleven additions of 1/11 make 1.0000000000000002, as in the devkit.
    assert r.ap == pytest.approx({"cat": 1.0, "dog": 1.0, "bird": 1.0}, abs=1e-12)
    assert r.mAP == pytest.approx(1.0, abs=1e-12)
    assert r.metric == ("voc07" if use07 else "voc12")


def test_difficult_match_is_ignored():
    # A is difficult. The top detection hits it: counted neither way, so the
    # curve is tp [0, 1], fp [0, 0] -> precision [0, 1], recall [0, 1], AP 1.
    # (Were it a false positive, precision would be [0, .5] and AP 0.5.)
    gts = [rec("a", [A, B], [0, 0], [True, False])]
    dets = {"a": det([A, B], [0.9, 0.8], [0, 0])}
    r = evaluate_voc(gts, dets, CLASSES, use_07_metric=False)
    assert r.ap["cat"] == 1.0
    assert r.n_gt["cat"] == 1 and r.n_det["cat"] == 2
    np.testing.assert_allclose(r.recall["cat"], [0, 1])
    np.testing.assert_allclose(r.precision["cat"], [0, 1])


def test_difficult_best_match_below_threshold_is_false_positive():
    # As in the devkit: "ignored" needs the IoU to reach the threshold.
    gts = [rec("a", [A, B], [0, 0], [True, False])]
    dets = {"a": det([[0, 0, 10, 3], B], [0.9, 0.8], [0, 0])}  # IoU 0.3 with difficult A
    r = evaluate_voc(gts, dets, CLASSES, use_07_metric=False)
    np.testing.assert_allclose(r.precision["cat"], [0, 0.5])
    assert r.ap["cat"] == pytest.approx(0.5)


def test_duplicate_is_false_positive_and_07_differs_from_12():
    # gt A, B. Detections A (0.9), A again (0.8, duplicate), B (0.7):
    # tp [1, 0, 1], fp [0, 1, 0] -> rec [.5, .5, 1], prec [1, .5, 2/3].
    # VOC07 = (6 * 1 + 5 * 2/3) / 11 = 0.848485; VOC12 = .5 + .5 * 2/3 = 0.833333.
    gts = [rec("a", [A, B], [0, 0])]
    dets = {"a": det([A, A, B], [0.9, 0.8, 0.7], [0, 0, 0])}
    r07 = evaluate_voc(gts, dets, CLASSES, use_07_metric=True)
    r12 = evaluate_voc(gts, dets, CLASSES, use_07_metric=False)
    np.testing.assert_allclose(r07.precision["cat"], [1, 0.5, 2 / 3])
    np.testing.assert_allclose(r07.recall["cat"], [0.5, 0.5, 1])
    assert r07.ap["cat"] == pytest.approx(9.333333333 / 11)
    assert r12.ap["cat"] == pytest.approx(0.833333333)


def test_best_match_already_taken_is_duplicate_not_reassigned():
    # Detection 2 = (0.5, 0, 10.5, 10): IoU 95/105 = 0.905 with A and 85/115 =
    # 0.739 with B2. Its best box is A, already matched -> false positive, even
    # though B2 is free and above the threshold.
    B2 = [2, 0, 12, 10]
    d2 = [0.5, 0, 10.5, 10]
    iou = box_iou(torch.tensor([d2]), torch.tensor([A, B2], dtype=torch.float32))[0]
    assert iou[0] == pytest.approx(95 / 105) and iou[1] == pytest.approx(85 / 115)
    gts = [rec("a", [A, B2], [0, 0])]
    dets = {"a": det([A, d2], [0.9, 0.8], [0, 0])}
    r = evaluate_voc(gts, dets, CLASSES, use_07_metric=False)
    np.testing.assert_allclose(r.recall["cat"], [0.5, 0.5])
    np.testing.assert_allclose(r.precision["cat"], [1, 0.5])
    assert r.ap["cat"] == pytest.approx(0.5)


def test_class_without_detections_has_ap_zero_and_counts_in_mean():
    gts = [rec("a", [A, B], [0, 1])]
    dets = {"a": det([A], [0.9], [0])}
    r = evaluate_voc(gts, dets, CLASSES[:2])
    assert r.ap == pytest.approx({"cat": 1.0, "dog": 0.0}, abs=1e-12)
    assert r.n_det["dog"] == 0
    assert r.mAP == pytest.approx(0.5, abs=1e-12)


def test_class_without_gt_is_nan_and_left_out_of_mean():
    # bird has detections but no gt; dog has only a difficult object: both
    # undefined (NaN), neither enters the mean.
    gts = [rec("a", [A, B], [0, 1], [False, True])]
    dets = {"a": det([A, B, FAR], [0.9, 0.8, 0.7], [0, 1, 2])}
    r = evaluate_voc(gts, dets, CLASSES)
    assert r.ap["cat"] == pytest.approx(1.0, abs=1e-12)
    assert math.isnan(r.ap["dog"]) and math.isnan(r.ap["bird"])
    assert r.n_gt == {"cat": 1, "dog": 0, "bird": 0}
    assert r.n_det["bird"] == 1
    assert r.mAP == pytest.approx(1.0, abs=1e-12)
    assert len(r.precision["bird"]) == 0 and len(r.recall["bird"]) == 0


def test_no_gt_at_all_gives_nan_map():
    r = evaluate_voc([rec("a", [], [])], {"a": det([A], [0.5], [0])}, CLASSES)
    assert math.isnan(r.mAP)


def test_tied_scores_keep_input_order():
    # Same score: the FAR miss comes first in the input, so the curve is
    # [FP, TP] -> precision [0, .5], recall [0, 1] -> VOC12 AP 0.5. Input
    # order reversed gives [TP, FP] -> AP 1.
    gts = [rec("a", [A], [0])]
    r = evaluate_voc(gts, {"a": det([FAR, A], [0.5, 0.5], [0, 0])}, CLASSES, use_07_metric=False)
    assert r.ap["cat"] == pytest.approx(0.5)
    r = evaluate_voc(gts, {"a": det([A, FAR], [0.5, 0.5], [0, 0])}, CLASSES, use_07_metric=False)
    assert r.ap["cat"] == 1.0


def test_tied_scores_across_images_follow_gt_record_order():
    # Image "a" comes first in gt_records; its miss ranks before "b"'s hit even
    # though the detections dict lists "b" first.
    gts = [rec("a", [A], [0]), rec("b", [A], [0])]
    dets = {"b": det([A], [0.5], [0]), "a": det([FAR], [0.5], [0])}
    r = evaluate_voc(gts, dets, CLASSES, use_07_metric=False)
    np.testing.assert_allclose(r.precision["cat"], [0, 0.5])
    assert r.ap["cat"] == pytest.approx(0.25)  # recall .5 at precision .5


def test_iou_exactly_at_threshold_is_true_positive():
    # (0,0,10,5) vs (0,0,10,10): intersection 50, union 100, IoU exactly 0.5.
    gts = [rec("a", [A], [0])]
    r = evaluate_voc(gts, {"a": det([[0, 0, 10, 5]], [0.9], [0])}, CLASSES, iou_threshold=0.5)
    assert r.ap["cat"] == pytest.approx(1.0, abs=1e-12)
    r = evaluate_voc(gts, {"a": det([[0, 0, 10, 4.9]], [0.9], [0])}, CLASSES, iou_threshold=0.5)
    assert r.ap["cat"] == 0.0


def test_wrong_class_does_not_match():
    gts = [rec("a", [A], [0])]
    r = evaluate_voc(gts, {"a": det([A], [0.9], [1])}, CLASSES)
    assert r.ap["cat"] == 0.0 and math.isnan(r.ap["dog"])


def test_images_without_detections_and_empty_input():
    gts = [rec("a", [A], [0]), rec("b", [B], [0])]
    r = evaluate_voc(gts, {"a": det([A], [0.9], [0]), "b": det([], [], [])}, CLASSES)
    assert r.n_gt["cat"] == 2 and r.n_det["cat"] == 1
    assert r.ap["cat"] == pytest.approx(6 / 11)  # recall 0.5 reached: points 0..0.5
    r = evaluate_voc(gts, {}, CLASSES)
    assert r.ap["cat"] == 0.0


def test_unknown_image_and_duplicate_ids_are_errors():
    gts = [rec("a", [A], [0])]
    with pytest.raises(EvaluationInputError, match="not in the ground truth"):
        evaluate_voc(gts, {"zzz": det([A], [0.9], [0])}, CLASSES)
    with pytest.raises(EvaluationInputError, match="twice"):
        evaluate_voc(gts + gts, {}, CLASSES)
    with pytest.raises(EvaluationInputError, match="out of range"):
        evaluate_voc(gts, {"a": det([A], [0.9], [7])}, CLASSES)


# --------------------------------------------- brute-force devkit reference ---

def reference_voc_ap(rec_, prec_, use07):
    """py-faster-rcnn's voc_ap, loops and all."""
    if use07:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            p = 0 if np.sum(rec_ >= t) == 0 else np.max(prec_[rec_ >= t])
            ap += p / 11.0
        return ap
    mrec = np.concatenate(([0.0], rec_, [1.0]))
    mpre = np.concatenate(([0.0], prec_, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])


def reference_evaluate(records, detections, n_classes, thr, use07):
    """Straight port of the devkit's per-detection loop (VOCevaldet.m), IoU >= thr."""
    out = {}
    for c in range(n_classes):
        class_recs, npos = {}, 0
        for r in records:
            m = r.labels == c
            class_recs[r.image_id] = {"bbox": r.boxes[m], "difficult": r.difficult[m],
                                      "det": [False] * int(m.sum())}
            npos += int((~r.difficult[m]).sum())
        ids, conf, bb = [], [], []
        for r in records:  # ties: gt_records order, then input order
            d = detections.get(r.image_id)
            if d is None:
                continue
            for k in np.flatnonzero(d.labels == c):
                ids.append(r.image_id)
                conf.append(float(d.scores[k]))
                bb.append(d.boxes[k])
        order = np.argsort(-np.asarray(conf), kind="stable")
        tp, fp = np.zeros(len(order)), np.zeros(len(order))
        for dpos, k in enumerate(order):
            R = class_recs[ids[k]]
            ovmax, jmax = -np.inf, -1
            if len(R["bbox"]):
                ov = box_iou(torch.from_numpy(bb[k][None]), torch.from_numpy(R["bbox"]))[0].numpy()
                ovmax, jmax = ov.max(), int(ov.argmax())
            if ovmax >= thr:
                if not R["difficult"][jmax]:
                    if not R["det"][jmax]:
                        tp[dpos] = 1
                        R["det"][jmax] = True
                    else:
                        fp[dpos] = 1
            else:
                fp[dpos] = 1
        if npos == 0:
            out[c] = (math.nan, None, None)
            continue
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        rec_ = tp / npos
        prec_ = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        out[c] = (reference_voc_ap(rec_, prec_, use07), rec_, prec_)
    return out


def random_problem(seed, n_images=25, n_classes=4):
    rng = np.random.default_rng(seed)
    records, detections = [], {}
    for i in range(n_images):
        n = int(rng.integers(0, 6))
        xy = rng.uniform(0, 60, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (n, 2))], 1).astype(np.float32)
        labels = rng.integers(0, n_classes, n)
        records.append(rec(f"im{i}", boxes, labels, rng.random(n) < 0.25))
        m = int(rng.integers(0, 15))
        if m == 0 and rng.random() < 0.5:
            continue  # some images absent from the detections dict
        src = rng.integers(0, max(n, 1), m)
        near = (boxes[src] if n else np.zeros((m, 4), np.float32)) + rng.normal(0, 3, (m, 4))
        xy = rng.uniform(0, 60, (m, 2))
        rand = np.concatenate([xy, xy + rng.uniform(5, 40, (m, 2))], 1)
        pick = rng.random(m) < 0.6
        dboxes = np.where(pick[:, None], near, rand).astype(np.float32)
        dboxes[:, 2:] = np.maximum(dboxes[:, 2:], dboxes[:, :2] + 0.5)
        dlabels = np.where(pick & (n > 0), labels[src] if n else 0, rng.integers(0, n_classes, m))
        scores = rng.integers(0, 8, m).astype(np.float32) / 8  # many ties on purpose
        detections[f"im{i}"] = det(dboxes, scores, dlabels)
    return records, detections, tuple(f"c{k}" for k in range(n_classes))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("use07", [True, False])
@pytest.mark.parametrize("thr", [0.5, 0.7])
def test_matches_devkit_reference_on_random_data(seed, use07, thr):
    records, detections, names = random_problem(seed)
    fast = evaluate_voc(records, detections, names, iou_threshold=thr, use_07_metric=use07)
    ref = reference_evaluate(records, detections, len(names), thr, use07)
    for c, name in enumerate(names):
        ap, rec_, prec_ = ref[c]
        if math.isnan(ap):
            assert math.isnan(fast.ap[name])
            continue
        assert fast.ap[name] == pytest.approx(ap, abs=1e-12)
        np.testing.assert_array_equal(fast.recall[name], rec_)
        np.testing.assert_array_equal(fast.precision[name], prec_)
    defined = [ref[c][0] for c in ref if not math.isnan(ref[c][0])]
    assert fast.mAP == pytest.approx(np.mean(defined), abs=1e-12)
