"""Turning a backend's raw windows into the proposal list every stage sees.

One function, :func:`finalize_windows`, so every backend (OpenCV, the
selectivesearch package, precomputed files) obeys the same contract:

- float32 [N, 4], (x1, y1, x2, y2), continuous 0-based pixels (``detector.boxes``);
- clipped to the image;
- windows with a side under ``min_size`` (and degenerate ones) removed;
- exact duplicates removed, keeping the FIRST occurrence, so the backend's
  ranking survives;
- at most ``max_windows``, the first ones in rank order.
"""
from __future__ import annotations

import numpy as np

from detector.box_arrays import clip_box_array, valid_box_mask


def xywh_to_xyxy_array(rects: np.ndarray) -> np.ndarray:
    """Selective search's integer (x, y, w, h) rects [N, 4] -> float32 (x1, y1, x2, y2) [N, 4].

    OpenCV's ``Rect(x, y, w, h)`` covers pixel columns x .. x+w-1, which in the
    project's continuous convention is [x, x+w): no "+1" or "-1" is needed.
    """
    r = np.asarray(rects, dtype=np.float32).reshape(-1, 4)
    return np.concatenate([r[:, :2], r[:, :2] + r[:, 2:]], axis=1)


def dedupe_first(boxes: np.ndarray) -> np.ndarray:
    """Remove exact duplicate rows of ``boxes`` [N, 4], keeping each first occurrence in order."""
    if len(boxes) == 0:
        return boxes
    _, first = np.unique(boxes, axis=0, return_index=True)
    return boxes[np.sort(first)]


def finalize_windows(boxes: np.ndarray, width: int, height: int, min_size: float,
                     max_windows: int) -> np.ndarray:
    """Clip, filter, dedupe and cap ranked windows.

    Args:
        boxes: [N, 4] (x1, y1, x2, y2) in image pixels, best-ranked first.
        width, height: the image size the boxes are clipped to.
        min_size: smallest allowed width and height in pixels (0: only drop
            degenerate boxes with zero width or height).
        max_windows: keep at most this many (the first, in rank order).
    Returns:
        float32 [M, 4], M <= max_windows, in the input's order.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if len(boxes) == 0:
        return np.zeros((0, 4), np.float32)
    finite = np.isfinite(boxes).all(axis=1)
    clipped = clip_box_array(boxes[finite], float(width), float(height))
    clipped = clipped[valid_box_mask(clipped, float(min_size))]
    # Clipping can make distinct raw windows identical (and precomputed files
    # repeat windows): keep the first, the better-ranked one.
    out = dedupe_first(clipped)
    return np.ascontiguousarray(out[:max_windows])
