"""The one box module of the project.

Every function works on float32 ``Tensor[N, 4]`` boxes in (x1, y1, x2, y2)
order, in continuous 0-based pixel coordinates with no "+1": a box that covers
pixel columns 0..9 inclusive is (0, y1, 10, y2) and has width 10. Loaders
convert their formats into this one (VOC's 1-based inclusive pixels in
``detector.data.voc``, COCO's xywh in ``detector.data.coco``, selective search's
(x, y, w, h) in ``proposals``). Every stage, from SVM mining to evaluation, uses
the IoU defined here. :mod:`detector.box_arrays` repeats the few operations
that the torch-free paths (proposals, the ONNX runtime) need, on numpy.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
import torchvision.ops

from .box_arrays import BBOX_XFORM_CLIP, valid_box_mask  # noqa: F401 (they live beside the numpy twins)


def as_box_tensor(boxes) -> Tensor:
    """Return ``boxes`` (array-like, shape [N, 4]) as a float32 tensor [N, 4]."""
    t = torch.as_tensor(np.asarray(boxes) if not isinstance(boxes, Tensor) else boxes,
                        dtype=torch.float32)
    return t.reshape(-1, 4)


def box_area(boxes: Tensor) -> Tensor:
    """Area of each box. boxes: [N, 4] -> [N]; degenerate boxes have area 0."""
    return _area(*boxes.unbind(-1))


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise intersection over union.

    Args:
        boxes1: [N, 4], boxes2: [M, 4].
    Returns:
        [N, M] IoU in [0, 1]; 0 where both boxes have zero area.
    """
    return _iou(boxes1.T[:, :, None], boxes2.T[:, None, :])


def paired_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of each box with its partner: boxes1, boxes2 [N, 4] -> [N].

    The same float32 operations as :func:`box_iou`, element by element, so
    ``paired_box_iou(a[i], b[j])`` equals ``box_iou(a, b)[i, j]`` bit for bit;
    for many small images at once (evaluation pairs every detection with its
    own image's boxes) it avoids one call per image.
    """
    # Coordinates first and contiguous: each operation then runs over one dense row.
    return _iou(boxes1.T.contiguous(), boxes2.T.contiguous())


def _area(x1: Tensor, y1: Tensor, x2: Tensor, y2: Tensor) -> Tensor:
    return (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)


def _iou(coords1: Tensor, coords2: Tensor) -> Tensor:
    """IoU of coordinate-first boxes [4, ...] (x1, y1, x2, y2 rows) that broadcast."""
    x1, y1, x2, y2 = coords1
    u1, v1, u2, v2 = coords2
    inter = ((torch.min(x2, u2) - torch.max(x1, u1)).clamp(min=0)
             * (torch.min(y2, v2) - torch.max(y1, v1)).clamp(min=0))
    union = _area(x1, y1, x2, y2) + _area(u1, v1, u2, v2) - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def flip_boxes(boxes: Tensor, width: float) -> Tensor:
    """Boxes [N, 4] of an image mirrored left-right: x1' = width - x2, x2' = width - x1.

    Exact in continuous coordinates (pixel i covers [i, i + 1) and moves to
    [width - i - 1, width - i)); flipping twice gives the boxes back.
    """
    boxes = as_box_tensor(boxes)
    return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)


def clip_boxes(boxes: Tensor, width: float, height: float) -> Tensor:
    """Clip boxes [N, 4] to the image [0, width] x [0, height]."""
    out = boxes.clone()
    out[:, 0::2] = out[:, 0::2].clamp(0, width)
    out[:, 1::2] = out[:, 1::2].clamp(0, height)
    return out


# The rule reads only indexing, subtraction and comparisons: one function for tensors and arrays.
valid_boxes = valid_box_mask


def encode_boxes(proposals: Tensor, targets: Tensor) -> Tensor:
    """R-CNN regression targets (dx, dy, dw, dh) that move ``proposals`` onto ``targets``.

    Args:
        proposals: [N, 4] boxes with positive width and height.
        targets: [N, 4] matched ground-truth boxes.
    Returns:
        [N, 4]: dx = (gx - px) / pw, dy = (gy - py) / ph, dw = log(gw / pw),
        dh = log(gh / ph), with (px, py) the centre and pw, ph the size.
    """
    pw = proposals[:, 2] - proposals[:, 0]
    ph = proposals[:, 3] - proposals[:, 1]
    px = proposals[:, 0] + 0.5 * pw
    py = proposals[:, 1] + 0.5 * ph
    gw = targets[:, 2] - targets[:, 0]
    gh = targets[:, 3] - targets[:, 1]
    gx = targets[:, 0] + 0.5 * gw
    gy = targets[:, 1] + 0.5 * gh
    return torch.stack([(gx - px) / pw, (gy - py) / ph,
                        torch.log(gw / pw), torch.log(gh / ph)], dim=1)


def decode_boxes(proposals: Tensor, deltas: Tensor) -> Tensor:
    """Inverse of :func:`encode_boxes`: apply deltas [N, 4] to proposals [N, 4] -> boxes [N, 4]."""
    pw = proposals[:, 2] - proposals[:, 0]
    ph = proposals[:, 3] - proposals[:, 1]
    px = proposals[:, 0] + 0.5 * pw
    py = proposals[:, 1] + 0.5 * ph
    dw = deltas[:, 2].clamp(max=BBOX_XFORM_CLIP)
    dh = deltas[:, 3].clamp(max=BBOX_XFORM_CLIP)
    cx = px + deltas[:, 0] * pw
    cy = py + deltas[:, 1] * ph
    w = pw * torch.exp(dw)
    h = ph * torch.exp(dh)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=1)


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression (torchvision.ops.nms, same IoU as above).

    Returns int64 indices of the kept boxes, by decreasing score.
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64)
    return torchvision.ops.nms(boxes.float(), scores.float(), iou_threshold)


def batched_nms(boxes: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float,
                max_per_label: int = 0) -> Tensor:
    """NMS done independently per label. Returns kept indices by decreasing score
    (equal scores in input order); with ``max_per_label`` > 0, only the best ``max_per_label`` of each label."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64)
    keep = torchvision.ops.batched_nms(boxes.float(), scores.float(), labels, iou_threshold)
    # Above 1000 boxes torchvision orders the kept boxes with an unstable sort: equal
    # scores then come in no defined order. A stable sort makes it input order on
    # both of its paths (and lets detector.box_arrays reproduce it).
    keep = keep.sort().values
    keep = keep[torch.sort(scores[keep], descending=True, stable=True).indices]
    if max_per_label > 0:
        keep = keep[rank_within_label(labels[keep]) < max_per_label]
    return keep


def rank_within_label(labels: Tensor) -> Tensor:
    """For a sequence of labels [N], how many earlier entries share each one's label."""
    order = torch.argsort(labels, stable=True)  # grouped by label, sequence order kept
    grouped = labels[order]
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order)) - torch.searchsorted(grouped, grouped)
    return rank


def xywh_to_xyxy(boxes: Tensor) -> Tensor:
    """(x, y, w, h) [N, 4] -> (x1, y1, x2, y2) [N, 4]."""
    return torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], dim=1)


def xyxy_to_xywh(boxes: Tensor) -> Tensor:
    """(x1, y1, x2, y2) [N, 4] -> (x, y, w, h) [N, 4]."""
    return torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)
