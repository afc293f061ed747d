"""AP by object size (small / medium / large) with COCO's area ranges, for any data.

COCO reports AP for small, medium and large objects; this computes the same
split under the VOC rules (VOC AP at one IoU), so VOC-format data gets it too.
Within a size range, as COCO does:

* ground-truth boxes outside the range are ignored like difficult ones: not
  counted as positives, and a detection matched to one counts neither way;
* a detection that matches nothing counts as a false positive only if its own
  area is in the range (a small false positive does not hurt the large AP).

Areas are w * h of the 0-based continuous boxes. Ranges are half-open
[low, high) here, so every box falls in exactly one (COCO's are closed at both
ends, which only matters for a box of exactly 32 x 32 or 96 x 96 pixels).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from detector.boxes import as_box_tensor, box_area
from detector.evaluation.matching import (MatchedDetections, class_aps, match_records, mean_ap,
                                         with_ignored)
from detector.records import Detections, ImageRecord

# COCO's area ranges (pycocotools cocoeval.Params: 32 ** 2 and 96 ** 2 pixels).
SIZE_RANGES: dict[str, tuple[float, float]] = {
    "small": (0.0, 32.0 ** 2),
    "medium": (32.0 ** 2, 96.0 ** 2),
    "large": (96.0 ** 2, math.inf),
}


@dataclass(frozen=True)
class SizeAP:
    """AP per size range: ``ap[size][class]`` (NaN without objects of that size),
    ``mAP[size]`` over the classes that have some, ``n_gt[size][class]``."""

    metric: str  # "voc07" or "voc12"
    iou_threshold: float
    ap: dict[str, dict[str, float]]
    mAP: dict[str, float]
    n_gt: dict[str, dict[str, int]]

    def to_dict(self) -> dict:
        nan_none = lambda x: None if math.isnan(x) else float(x)
        return {"metric": self.metric, "iou_threshold": self.iou_threshold,
                "ranges": {k: [lo, None if math.isinf(hi) else hi] for k, (lo, hi) in SIZE_RANGES.items()},
                "mAP": {k: nan_none(v) for k, v in self.mAP.items()},
                "AP": {k: {c: nan_none(v) for c, v in aps.items()} for k, aps in self.ap.items()},
                "n_gt": self.n_gt}


def areas(boxes: np.ndarray) -> np.ndarray:
    """Areas float64 [N] of boxes [N, 4] (x1, y1, x2, y2)."""
    return box_area(as_box_tensor(boxes)).numpy().astype(np.float64)


def size_of(area: np.ndarray) -> np.ndarray:
    """Index into SIZE_RANGES (0 small, 1 medium, 2 large) of each area [N]."""
    edges = [hi for _, hi in SIZE_RANGES.values()][:-1]
    return np.searchsorted(edges, area, side="right")


def ap_by_size(matched: MatchedDetections, use_07_metric: bool = True) -> SizeAP:
    """VOC AP per class and size range (rules in the module docstring) from the matching."""
    gt_area, det_area = areas(matched.gt_boxes), areas(matched.det_boxes)
    names = matched.class_names
    ap, mAP, n_gt = {}, {}, {}
    for size, (lo, hi) in SIZE_RANGES.items():
        in_range = with_ignored(matched, matched.gt_ignored | (gt_area < lo) | (gt_area >= hi))
        drop = in_range.fp & ((det_area < lo) | (det_area >= hi))
        aps = class_aps(in_range, use_07_metric, drop=drop)
        ap[size] = dict(zip(names, aps))
        mAP[size] = mean_ap(aps)
        n_gt[size] = {c: in_range.n_positives(i) for i, c in enumerate(names)}
    return SizeAP("voc07" if use_07_metric else "voc12", matched.iou_threshold, ap, mAP, n_gt)


def evaluate_voc_by_size(gt_records: Sequence[ImageRecord], detections: Mapping[str, Detections],
                         class_names: Sequence[str], iou_threshold: float = 0.5,
                         use_07_metric: bool = True) -> SizeAP:
    """VOC AP per class and size range of ``detections`` (as ``evaluate_voc`` takes them)."""
    return ap_by_size(match_records(gt_records, detections, class_names, iou_threshold), use_07_metric)
