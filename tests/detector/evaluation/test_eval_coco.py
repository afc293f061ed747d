"""Tests of detector.evaluation.coco_eval against pycocotools called directly."""
from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detector.evaluation.coco_eval import evaluate_coco
from detector.evaluation.voc_ap import EvaluationInputError
from detector.records import Detections, ImageRecord

NAMES = ("cat", "dog", "bird")


def random_problem(seed, n_images=12):
    rng = np.random.default_rng(seed)
    records, dets = [], {}
    for i in range(n_images):
        n = int(rng.integers(1, 5))
        xy = rng.uniform(0, 200, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(20, 150, (n, 2))], 1).astype(np.float32)
        labels = rng.integers(0, 2, n)  # "bird" never has ground truth
        records.append(ImageRecord(f"{i:06d}", Path(f"{i}.jpg"), 400, 400, boxes, labels,
                                   rng.random(n) < 0.2))
        m = int(rng.integers(0, 12))
        src = rng.integers(0, n, m)
        dboxes = (boxes[src] + rng.normal(0, 6, (m, 4))).astype(np.float32)
        dboxes[:, 2:] = np.maximum(dboxes[:, 2:], dboxes[:, :2] + 1)
        dlabels = np.where(rng.random(m) < 0.8, labels[src], rng.integers(0, 3, m))
        dets[f"{i:06d}"] = Detections(dboxes, rng.random(m).astype(np.float32), dlabels.astype(np.int64))
    return records, dets


def pycocotools_directly(records, dets, cat_ids):
    """The same data written out by hand in COCO's own terms, through COCOeval."""
    gt = {"images": [], "annotations": [], "categories": [{"id": c, "name": str(c)} for c in cat_ids]}
    img_id = {}
    for k, r in enumerate(records):
        img_id[r.image_id] = 100 + k  # any ids will do
        gt["images"].append({"id": 100 + k, "width": r.width, "height": r.height})
        for b, l, d in zip(r.boxes.tolist(), r.labels.tolist(), r.difficult.tolist()):
            w, h = b[2] - b[0], b[3] - b[1]
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": 100 + k,
                                      "category_id": cat_ids[l], "bbox": [b[0], b[1], w, h],
                                      "area": w * h, "iscrowd": int(d)})
    res = [{"image_id": img_id[i], "category_id": cat_ids[l],
            "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": s}
           for i, d in dets.items()
           for b, s, l in zip(d.boxes.tolist(), d.scores.tolist(), d.labels.tolist())]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        e = COCOeval(coco, coco.loadRes(res), "bbox")
        e.evaluate()
        e.accumulate()
        e.summarize()
    return e


@pytest.mark.parametrize("seed", range(3))
def test_agrees_with_pycocotools_directly(seed):
    records, dets = random_problem(seed)
    ours = evaluate_coco(records, dets, NAMES)
    e = pycocotools_directly(records, dets, [1, 2, 3])
    np.testing.assert_allclose(ours.stats, [math.nan if s < 0 else s for s in e.stats])
    assert ours.AP == pytest.approx(e.stats[0]) and ours.mAP == ours.AP
    assert ours.AP50 == pytest.approx(e.stats[1]) and ours.AP75 == pytest.approx(e.stats[2])
    prec = e.eval["precision"][:, :, :, 0, -1]
    for k, name in enumerate(NAMES):
        p = prec[:, :, k]
        if name == "bird":
            assert math.isnan(ours.ap[name]) and (p == -1).all()
        else:
            assert ours.ap[name] == pytest.approx(p[p > -1].mean())
            np.testing.assert_allclose(ours.precision[name], p[0])
    # The mean of per-class AP over classes with gt is COCO's AP.
    assert np.nanmean(list(ours.ap.values())) == pytest.approx(ours.AP)


def test_category_mapping():
    records, dets = random_problem(5)
    mapping = {"cat": 17, "dog": 3, "bird": 90}
    ours = evaluate_coco(records, dets, NAMES, category_ids=mapping)
    e = pycocotools_directly(records, dets, [17, 3, 90])
    np.testing.assert_allclose(ours.stats, [math.nan if s < 0 else s for s in e.stats])
    # Same numbers as with the default ids: the mapping is only a relabelling.
    default = evaluate_coco(records, dets, NAMES)
    assert default.AP == pytest.approx(ours.AP)
    assert default.ap["cat"] == pytest.approx(ours.ap["cat"])


def test_perfect_detector_and_difficult_as_crowd():
    box = np.array([[10, 10, 60, 60], [100, 100, 180, 150]], np.float32)
    rec = ImageRecord("a", Path("a.jpg"), 200, 200, box, np.array([0, 1]), np.array([False, True]))
    # A detection exactly on the difficult (crowd) box is not a false positive.
    dets = {"a": Detections(box, np.array([0.9, 0.8], np.float32), np.array([0, 1]))}
    r = evaluate_coco([rec], dets, NAMES)
    assert r.AP == pytest.approx(1.0) and r.AP50 == pytest.approx(1.0)
    assert r.ap["cat"] == pytest.approx(1.0)
    assert math.isnan(r.ap["dog"])  # only a difficult object: no ground truth
    assert r.n_gt == {"cat": 1, "dog": 0, "bird": 0} and r.n_det["dog"] == 1


def test_no_detections_gives_zero():
    records, _ = random_problem(1)
    r = evaluate_coco(records, {}, NAMES)
    assert r.AP == 0.0 and r.ap["cat"] == 0.0
    assert r.n_det == {"cat": 0, "dog": 0, "bird": 0}


def test_errors():
    records, dets = random_problem(0)
    with pytest.raises(EvaluationInputError, match="not in the ground truth"):
        evaluate_coco(records, {"nope": dets["000000"]}, NAMES)
    with pytest.raises(EvaluationInputError, match="no category id"):
        evaluate_coco(records, dets, NAMES, category_ids={"cat": 1})
