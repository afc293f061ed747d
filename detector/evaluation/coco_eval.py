"""COCO-style box AP (0.5:0.95, 0.5, 0.75) through pycocotools, in memory.

The ground truth becomes a COCO dataset dict held in memory (no files), by
``detector.data.voc_to_coco_dict``, and the detections a list of result dicts
passed to ``COCO.loadRes``. Boxes are converted from our (x1, y1, x2, y2) to
COCO's (x, y, w, h) at this edge.

Conventions of the conversion:
* image ids follow ``detector.data.coco_image_ids``: int(image_id) when every
  id is a canonical integer (COCO data), else position + 1;
* category id = label + 1 (COCO's ids start at 1) unless ``category_ids``
  maps class names to other ids;
* a VOC ``difficult`` object becomes ``iscrowd=1``: pycocotools neither counts
  it as a positive nor penalises a detection matched to it, the nearest thing
  it has to VOC's "ignore". One difference: a detection's IoU with a crowd box
  is intersection / detection area, so a detection inside a difficult box is
  absorbed more readily than under VOC rules;
* box area for the small/medium/large ranges is w * h (no masks).
"""
from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detector.data import InMemoryDataset, coco_image_ids, voc_to_coco_dict
from detector.evaluation.result_files import default_category_ids  # noqa: F401 (re-exported)
from detector.evaluation.voc_ap import EvaluationInputError
from detector.records import Detections, ImageRecord

# Index of the summary numbers in COCOeval.stats (pycocotools summarize()).
STAT_AP, STAT_AP50, STAT_AP75 = 0, 1, 2
# COCOeval.eval["precision"] axes: [T iou thresholds, R recall points, K
# classes, A area ranges ("all" first), M max-detection limits (100 last)].
AREA_ALL, MAX_DETS_LAST = 0, -1
IOU_50 = 0  # first of the thresholds 0.5:0.05:0.95


@dataclass(frozen=True)
class COCOResult:
    """Result of :func:`evaluate_coco`.

    ``ap`` is per class AP averaged over IoU 0.5:0.95 (NaN for a class with no
    non-crowd ground truth); ``precision``/``recall`` is the curve at IoU 0.5
    on pycocotools' 101 recall points, for plotting (empty when AP is NaN).
    """

    metric: str  # always "coco"
    class_names: tuple[str, ...]
    mAP: float  # = AP, the COCO primary metric (AP over IoU 0.5:0.95)
    AP: float
    AP50: float
    AP75: float
    stats: tuple[float, ...]  # the 12 numbers of COCOeval.summarize()
    ap: dict[str, float]
    precision: dict[str, np.ndarray]
    recall: dict[str, np.ndarray]
    n_gt: dict[str, int]  # non-crowd (non-difficult) ground-truth boxes
    n_det: dict[str, int]

    def summary(self) -> dict[str, float]:
        """Headline numbers: {"AP": ..., "AP50": ..., "AP75": ...}."""
        return {"AP": self.AP, "AP50": self.AP50, "AP75": self.AP75}


def records_to_coco(gt_records: Sequence[ImageRecord], detections: Mapping[str, Detections],
                    class_names: Sequence[str], category_ids: Mapping[str, int]):
    """Build (ground-truth dataset dict, result list) for pycocotools.

    The ground truth is :func:`detector.data.voc_to_coco_dict` (one converter
    for the whole project), with its category ids replaced by ``category_ids``.
    Returns the COCO dataset dict and the list of {image_id, category_id,
    bbox [x, y, w, h], score} results.
    """
    dataset = InMemoryDataset(gt_records, class_names, name="evaluation", split="evaluation")
    gt = voc_to_coco_dict(dataset)
    image_of = coco_image_ids(dataset)
    cat_of_label = [int(category_ids[n]) for n in class_names]
    # voc_to_coco_dict numbers categories label + 1; move them onto category_ids.
    for ann in gt["annotations"]:
        ann["category_id"] = cat_of_label[ann["category_id"] - 1]
    for cat in gt["categories"]:
        cat["id"] = cat_of_label[cat["id"] - 1]
    unknown = [k for k in detections if k not in image_of]
    if unknown:
        raise EvaluationInputError(f"{len(unknown)} detected image id(s) are not in the ground truth, "
                                   f"e.g. {unknown[:3]}")
    results = []
    for image_id, det in detections.items():
        for box, score, label in zip(det.boxes.tolist(), det.scores.tolist(), det.labels.tolist()):
            results.append({"image_id": image_of[image_id], "category_id": cat_of_label[label],
                            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                            "score": score})
    return gt, results


def evaluate_coco(gt_records: Sequence[ImageRecord], detections: Mapping[str, Detections],
                  class_names: Sequence[str],
                  category_ids: Mapping[str, int] | None = None) -> COCOResult:
    """COCO box AP of ``detections`` against ``gt_records`` (pycocotools COCOeval).

    Args:
        gt_records: annotated images (difficult -> iscrowd, see module doc).
        detections: image_id -> Detections; unknown image ids are an error.
        class_names: class names in label order.
        category_ids: class name -> COCO category id; default label + 1.
    Returns:
        COCOResult with AP, AP50, AP75, the 12 summary stats and per-class AP.
    """
    class_names = tuple(class_names)
    category_ids = dict(category_ids or default_category_ids(class_names))
    missing = [n for n in class_names if n not in category_ids]
    if missing:
        raise EvaluationInputError(f"no category id for classes {missing}")
    for rec in gt_records:
        if len(rec.labels) and (rec.labels.min() < 0 or rec.labels.max() >= len(class_names)):
            raise EvaluationInputError(f"image {rec.image_id!r}: ground-truth label out of range")
    for image_id, det in detections.items():
        if len(det) and (det.labels.min() < 0 or det.labels.max() >= len(class_names)):
            raise EvaluationInputError(f"image {image_id!r}: detection label out of range")
    dataset, results = records_to_coco(gt_records, detections, class_names, category_ids)

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco_gt = COCO()
        coco_gt.dataset = dataset
        coco_gt.createIndex()
        if results:
            coco_dt = coco_gt.loadRes(results)
        else:  # loadRes cannot take an empty list (it reads anns[0])
            coco_dt = COCO()
            coco_dt.dataset = {"images": list(dataset["images"]), "annotations": [],
                               "categories": list(dataset["categories"])}
            coco_dt.createIndex()
        coco_eval = COCOeval(coco_gt, coco_dt, iouType="bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()

    precision_all = coco_eval.eval["precision"][:, :, :, AREA_ALL, MAX_DETS_LAST]  # [T, R, K]
    rec_points = np.asarray(coco_eval.params.recThrs, dtype=np.float64)
    k_of_cat = {c: k for k, c in enumerate(coco_eval.params.catIds)}
    ap, precision, recall, n_gt, n_det = {}, {}, {}, {}, {}
    for label, name in enumerate(class_names):
        p = precision_all[:, :, k_of_cat[category_ids[name]]]
        valid = p > -1  # -1 marks "no ground truth" in pycocotools
        ap[name] = float(p[valid].mean()) if valid.any() else math.nan
        precision[name] = p[IOU_50].astype(np.float64) if valid.any() else np.zeros(0)
        recall[name] = rec_points if valid.any() else np.zeros(0)
        n_gt[name] = int(sum(int(((r.labels == label) & ~r.difficult).sum()) for r in gt_records))
        n_det[name] = int(sum(int((d.labels == label).sum()) for d in detections.values()))
    # summarize() writes -1 where nothing is defined (no ground truth at all).
    stats = tuple(math.nan if s < 0 else float(s) for s in coco_eval.stats)
    return COCOResult(metric="coco", class_names=class_names, mAP=stats[STAT_AP], AP=stats[STAT_AP],
                      AP50=stats[STAT_AP50], AP75=stats[STAT_AP75], stats=stats, ap=ap,
                      precision=precision, recall=recall, n_gt=n_gt, n_det=n_det)
