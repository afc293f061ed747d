"""The box operations the torch-free paths need, on numpy float32 [N, 4] arrays.

The same convention as :mod:`detector.boxes` (x1, y1, x2, y2; continuous
0-based pixels; no "+1"), for the code that must run without torch: the
proposal backends (their worker processes import no torch) and the ONNX
runtime (:mod:`detector.deploy`). Each function repeats its torch twin's
float32 operations in the same order: clipping, filtering and NMS give the
same results bit for bit, tie order included; decoding agrees to the last
bit of float32 ``exp`` (tests/detector/test_box_arrays.py checks each
against :mod:`detector.boxes` and torchvision).
"""
from __future__ import annotations

import math

import numpy as np

# Regression deltas dw, dh are clamped before exp() so a wild prediction cannot
# overflow (same bound as torchvision's BoxCoder: log(1000 / 16)).
BBOX_XFORM_CLIP = math.log(1000.0 / 16)

# torchvision.ops.batched_nms offsets each label's boxes on CPU while the
# boxes hold at most this many numbers, and runs NMS per label above it
# (torchvision/ops/boxes.py); the two give the same kept set, but their
# float32 IoUs can differ in the last bit, so both are followed.
TORCHVISION_PER_LABEL_ABOVE = 4000


def clip_box_array(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    """Boxes [N, 4] clipped to the image [0, width] x [0, height] (a new array)."""
    out = np.array(boxes, dtype=np.float32, copy=True).reshape(-1, 4)
    out[:, 0::2] = np.clip(out[:, 0::2], 0, width)
    out[:, 1::2] = np.clip(out[:, 1::2], 0, height)
    return out


def valid_box_mask(boxes: np.ndarray, min_size: float = 0.0) -> np.ndarray:
    """Boolean mask [N] of boxes [N, 4] (an array or a tensor) whose width and height
    both exceed ``min_size`` (``>= min_size`` when min_size > 0; ``> 0`` when it is 0)."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    if min_size > 0:
        return (w >= min_size) & (h >= min_size)
    return (w > 0) & (h > 0)


def decode_box_array(proposals: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """Apply R-CNN deltas (dx, dy, dw, dh) [N, 4] to windows [N, 4] -> float32 boxes [N, 4]
    (:func:`detector.boxes.decode_boxes`: dw, dh clamped at BBOX_XFORM_CLIP before exp)."""
    proposals = np.asarray(proposals, np.float32)
    deltas = np.asarray(deltas, np.float32)
    pw = proposals[:, 2] - proposals[:, 0]
    ph = proposals[:, 3] - proposals[:, 1]
    px = proposals[:, 0] + np.float32(0.5) * pw
    py = proposals[:, 1] + np.float32(0.5) * ph
    dw = np.minimum(deltas[:, 2], np.float32(BBOX_XFORM_CLIP))
    dh = np.minimum(deltas[:, 3], np.float32(BBOX_XFORM_CLIP))
    cx = px + deltas[:, 0] * pw
    cy = py + deltas[:, 1] * ph
    w = pw * np.exp(dw)
    h = ph * np.exp(dh)
    half = np.float32(0.5)
    return np.stack([cx - half * w, cy - half * h, cx + half * w, cy + half * h], axis=1)


def nms_array(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression, torchvision.ops.nms's CPU kernel in numpy.

    Boxes are visited by decreasing score (a stable sort: equal scores keep
    their input order); each kept box removes the later ones whose IoU with it,
    computed in float32 as the kernel does, exceeds ``iou_threshold`` (compared
    in float64, as the kernel compares with its double threshold).

    Returns:
        int64 indices of the kept boxes, by decreasing score.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    order = np.argsort(-np.asarray(scores, np.float32), kind="stable")
    x1, y1, x2, y2 = (np.ascontiguousarray(c) for c in boxes[order].T)
    areas = (x2 - x1) * (y2 - y1)
    alive = np.ones(len(order), bool)
    keep = []
    with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 is NaN, never above the threshold
        for i in range(len(order)):
            if not alive[i]:
                continue
            keep.append(i)
            rest = i + 1 + np.flatnonzero(alive[i + 1:])
            if len(rest) == 0:
                break
            w = np.maximum(np.float32(0), np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
            h = np.maximum(np.float32(0), np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
            inter = w * h
            iou = inter / (areas[i] + areas[rest] - inter)
            alive[rest[iou.astype(np.float64) > iou_threshold]] = False
    return order[np.array(keep, np.int64)]


def batched_nms_array(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_threshold: float,
                      max_per_label: int = 0) -> np.ndarray:
    """NMS done independently per label (:func:`detector.boxes.batched_nms`, i.e.
    torchvision.ops.batched_nms on the CPU). Returns kept indices by decreasing
    score; with ``max_per_label`` > 0, only the best ``max_per_label`` of each label."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32)
    labels = np.asarray(labels, np.int64)
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    if boxes.size > TORCHVISION_PER_LABEL_ABOVE:
        kept = np.zeros(len(boxes), bool)
        for label in np.unique(labels):
            mine = np.flatnonzero(labels == label)
            kept[mine[nms_array(boxes[mine], scores[mine], iou_threshold)]] = True
        keep = np.flatnonzero(kept)
        keep = keep[np.argsort(-scores[keep], kind="stable")]
    else:
        # Shift each label's boxes by label * (max coordinate + 1) so that no two
        # labels overlap, then one NMS (torchvision's coordinate trick, in float32).
        offsets = labels.astype(np.float32) * (boxes.max() + np.float32(1))
        keep = nms_array(boxes + offsets[:, None], scores, iou_threshold)
    if max_per_label > 0:
        keep = keep[rank_within_labels(labels[keep]) < max_per_label]
    return keep


def rank_within_labels(labels: np.ndarray) -> np.ndarray:
    """For a sequence of labels [N], how many earlier entries share each one's label."""
    order = np.argsort(labels, kind="stable")  # grouped by label, sequence order kept
    grouped = labels[order]
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order)) - np.searchsorted(grouped, grouped, side="left")
    return rank
