"""Windows to fixed-length vectors: scale selection, window mapping, pyramid pooling.

The per-image step of SPP-net between the conv5 maps and the classifiers:
each window picks one scale (area closest to 224x224 there), is mapped onto
that scale's conv5 map, and is max-pooled by the spatial pyramid.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from .boxes import as_box_tensor, box_iou
from .features import FeatureMap
from .pooling import (DEFAULT_WINDOW_MARGIN, FeatureGrid, SpatialPyramidPool, map_windows_to_features,
                      select_scales)


@torch.inference_mode()
def pool_windows(maps: Sequence[FeatureMap], windows, pool: SpatialPyramidPool, grid: FeatureGrid,
                 canonical_window: int, margin: float = DEFAULT_WINDOW_MARGIN) -> Tensor:
    """Pooled conv5 ("pool5") vectors of windows given in original image coordinates.

    Args:
        maps: the image's conv5 maps, one per scale.
        windows: [N, 4] boxes (x1, y1, x2, y2) in the original image.
        pool: the spatial pyramid pooling layer.
        grid: the backbone's cell grid (``Backbone.grid``: stride, centre offset).
        canonical_window: scale selection target side (224 in the paper).
        margin: the window mapping's margin, in strides (0.5: the cells whose
            centres lie inside the window; see ``map_windows_to_features``).
    Returns:
        float32 [N, pool.output_dim(C)].
    """
    windows = as_box_tensor(windows)
    channels = maps[0].features.shape[0]
    out = torch.zeros(len(windows), pool.output_dim(channels))
    if len(windows) == 0:
        return out
    if len(maps) == 1:
        chosen = torch.zeros(len(windows), dtype=torch.int64)
    else:
        chosen = select_scales(windows, [m.factor for m in maps], canonical_window)
    for s, fmap in enumerate(maps):
        sel = torch.nonzero(chosen == s).squeeze(1)
        if sel.numel() == 0:
            continue
        _, h, w = fmap.features.shape
        cells = map_windows_to_features(windows[sel] * fmap.factor, grid, h, w, margin)
        out[sel] = pool(fmap.features, cells)
    return out


def match_windows(windows: np.ndarray, gt_boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best ground-truth match of each window.

    Returns:
        (max_iou float32 [N], argmax int64 [N]); zeros when there is no gt box.
    """
    n = len(windows)
    if len(gt_boxes) == 0 or n == 0:
        return np.zeros(n, np.float32), np.zeros(n, np.int64)
    iou = box_iou(as_box_tensor(windows), as_box_tensor(gt_boxes))
    best, arg = iou.max(dim=1)
    return best.numpy().astype(np.float32), arg.numpy().astype(np.int64)
