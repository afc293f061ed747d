"""One dispatch from a metric name to its evaluator (VOC07, VOC12 or COCO)."""
from __future__ import annotations

from detector.evaluation.coco_eval import evaluate_coco
from detector.evaluation.voc_ap import evaluate_voc

METRICS = ("voc07", "voc12", "coco")
DEFAULT_IOU = 0.5  # PASCAL VOC's match threshold


def evaluate_detections(records, detections, class_names, metric: str, iou: float = DEFAULT_IOU,
                        category_ids: dict | None = None):
    """VOCResult (``voc07``: 11-point AP; ``voc12``: area under the PR curve, at ``iou``)
    or COCOResult (``coco``: AP over IoU 0.5:0.95, pycocotools)."""
    if metric == "coco":
        return evaluate_coco(records, detections, class_names, category_ids)
    if metric not in ("voc07", "voc12"):
        raise ValueError(f"metric {metric!r} must be one of {', '.join(METRICS)}")
    return evaluate_voc(records, detections, class_names, iou_threshold=iou,
                        use_07_metric=metric == "voc07")
