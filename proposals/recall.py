"""How good are the windows: recall, recall against the number of windows, ABO/MABO.

Pure functions on in-memory data (ground-truth records + a dict of proposals).
Definitions (Uijlings et al. 2013; Hosang et al. 2015):

- best overlap of a ground-truth box: max IoU (``detector.boxes.box_iou``) with
  any window of its image; with only the first n windows for the curve.
- recall@t: fraction of ground-truth boxes whose best overlap is >= t.
- ABO of a class: mean best overlap of its ground-truth boxes; MABO: mean of
  the classes' ABO (classes without boxes are left out).
- AR: mean recall over IoU 0.5:0.05:0.95.

VOC ``difficult`` boxes are left out by default, as in detection evaluation.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from detector.records import ImageRecord

# COCO/Hosang et al.: IoU thresholds 0.5, 0.55, ..., 0.95.
IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
# Points of the recall-vs-windows curve (log-spaced, as proposal papers plot it).
WINDOW_COUNTS = (1, 2, 5, 10, 20, 50, 100, 200, 300, 500, 700, 1000, 1500, 2000)


def best_overlaps(gt_boxes: np.ndarray, windows: np.ndarray,
                  window_counts: Sequence[int]) -> np.ndarray:
    """Best IoU of each ground-truth box with the first n windows, for each n.

    Args:
        gt_boxes: [G, 4]; windows: [N, 4] in rank order; window_counts: K counts.
    Returns:
        float64 [G, K]; entry (g, k) is max IoU of box g with windows[:window_counts[k]]
        (0 where there are no windows).
    """
    g = len(gt_boxes)
    out = np.zeros((g, len(window_counts)), np.float64)
    if g == 0 or len(windows) == 0:
        return out
    from detector.boxes import as_box_tensor, box_iou  # here: proposals imports no torch until it measures

    iou = box_iou(as_box_tensor(gt_boxes), as_box_tensor(windows)).numpy().astype(np.float64)
    running = np.maximum.accumulate(iou, axis=1)  # [G, N]: best over the first j+1
    idx = np.minimum(np.asarray(window_counts, dtype=np.int64), len(windows)) - 1
    valid = idx >= 0
    out[:, valid] = running[:, idx[valid]]
    return out


@dataclass
class RecallReport:
    """Proposal quality of one split. Recalls are fractions in [0, 1]."""

    num_images: int
    num_gt: int
    iou_thresholds: list[float]
    recall_at_iou: list[float]  # [T] with all windows
    window_counts: list[int]
    recall_vs_windows: list[float]  # [K] recall@0.5 with the first n windows
    average_recall: float  # mean of recall_at_iou
    abo_per_class: dict[str, float]
    mabo: float
    windows_per_image: float  # mean
    missing_images: list[str] = field(default_factory=list)  # no proposals given

    def recall_at(self, threshold: float) -> float:
        return self.recall_at_iou[self.iou_thresholds.index(round(threshold, 2))]


def evaluate_proposals(records: Sequence[ImageRecord], proposals: Mapping[str, np.ndarray],
                       class_names: Sequence[str], *, max_windows: int | None = None,
                       iou_thresholds: Sequence[float] = IOU_THRESHOLDS,
                       window_counts: Sequence[int] = WINDOW_COUNTS,
                       include_difficult: bool = False) -> RecallReport:
    """Recall, recall-vs-windows and ABO of ``proposals`` against ``records``.

    Args:
        records: ground truth; ``labels`` index ``class_names``.
        proposals: image_id -> float32 [N, 4] windows in rank order. An image
            missing here counts as having no windows (listed in missing_images).
        max_windows: use only the first max_windows of each image (None: all).
    """
    counts = [int(n) for n in window_counts]
    grid = counts + [max_windows or np.iinfo(np.int32).max]
    overlaps, labels, missing, n_windows = [], [], [], []
    for rec in records:
        keep = np.ones(len(rec.boxes), bool) if include_difficult else ~rec.difficult.astype(bool)
        windows = proposals.get(rec.image_id)
        if windows is None:
            missing.append(rec.image_id)
            windows = np.zeros((0, 4), np.float32)
        if max_windows is not None:
            windows = windows[:max_windows]
        n_windows.append(len(windows))
        overlaps.append(best_overlaps(rec.boxes[keep], windows, grid))
        labels.append(rec.labels[keep])
    best = np.concatenate(overlaps) if overlaps else np.zeros((0, len(grid)))
    labels = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    final = best[:, -1]
    n = max(len(final), 1)
    recall_at_iou = [float((final >= t - 1e-9).sum() / n) for t in iou_thresholds]
    curve = [float((best[:, k] >= 0.5 - 1e-9).sum() / n) for k in range(len(counts))]
    abo = {name: float(final[labels == c].mean())
           for c, name in enumerate(class_names) if (labels == c).any()}
    return RecallReport(
        num_images=len(records), num_gt=int(len(final)),
        iou_thresholds=[float(t) for t in iou_thresholds], recall_at_iou=recall_at_iou,
        window_counts=counts, recall_vs_windows=curve,
        average_recall=float(np.mean(recall_at_iou)) if recall_at_iou else 0.0,
        abo_per_class=abo, mabo=float(np.mean(list(abo.values()))) if abo else 0.0,
        windows_per_image=float(np.mean(n_windows)) if n_windows else 0.0,
        missing_images=missing)
