"""One dispatch from a metric name to its evaluator (VOC07, VOC12 or COCO)."""
from __future__ import annotations

import logging

from detector.evaluation.coco_eval import evaluate_coco
from detector.evaluation.voc_ap import evaluate_voc

METRICS = ("voc07", "voc12", "coco")
DEFAULT_IOU = 0.5  # PASCAL VOC's match threshold

logger = logging.getLogger(__name__)


def detection_warnings(detections) -> list[str]:
    """What looks wrong in a set of detections before it is scored (also logged)."""
    found = []
    total = sum(len(d) for d in detections.values())
    if total == 0:
        found.append(f"no detections at all (results for {len(detections)} image(s)): every AP will be 0")
    bad = {k: int(((d.boxes[:, 2] < d.boxes[:, 0]) | (d.boxes[:, 3] < d.boxes[:, 1])).sum())
           for k, d in detections.items() if len(d)}
    bad = {k: n for k, n in bad.items() if n}
    if bad:
        first = next(iter(bad))
        found.append(f"{sum(bad.values())} detection box(es) with negative width or height in "
                     f"{len(bad)} image(s) (e.g. {first!r}); they are scored as false positives")
    for w in found:
        logger.warning(w)
    return found


def evaluate_detections(records, detections, class_names, metric: str, iou: float = DEFAULT_IOU,
                        category_ids: dict | None = None):
    """VOCResult (``voc07``: 11-point AP; ``voc12``: area under the PR curve, at ``iou``)
    or COCOResult (``coco``: AP over IoU 0.5:0.95, pycocotools)."""
    detection_warnings(detections)
    if metric == "coco":
        return evaluate_coco(records, detections, class_names, category_ids)
    if metric not in ("voc07", "voc12"):
        raise ValueError(f"metric {metric!r} must be one of {', '.join(METRICS)}")
    return evaluate_voc(records, detections, class_names, iou_threshold=iou,
                        use_07_metric=metric == "voc07")
