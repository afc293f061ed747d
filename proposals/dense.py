"""Dense windows: a multi-scale, multi-aspect sliding grid, ranked, for what segmentation cannot isolate.

Selective search groups segments, so it finds objects that differ from their
surroundings in colour or texture boundaries. Texture-like defects, cells in
clutter and other low-contrast objects often make no segment of their own;
there a grid of windows (the sliding-window detectors before R-CNN, OverFeat)
still covers them. SPP pooling does not care where a window comes from, so the
grid goes through the same pipeline.

The grid, for an image of W x H pixels:

- sizes (the square root of the window area) from ``sqrt(W * H)`` down to
  ``min_size``, ``scales_per_octave`` per halving;
- for each size every aspect ratio ``a`` (width / height) of ``aspects``:
  a window of ``s * sqrt(a)`` x ``s / sqrt(a)``, clipped to the image (a window
  wider than the image becomes full width); a "shape" is one size x aspect;
- positions spaced ``stride`` x the window's side along each axis, spread
  evenly so the first and last windows touch the image edges.

A 200 x 200 image has ~35,000 such windows at the defaults; the cap keeps
2000, so they are ranked (Alexe et al.'s objectness idea, "centre-surround
contrast", on integral images: O(1) per window):

- score: for a few feature maps (smoothed grey, gradient magnitude, small
  bright and dark spots by morphological top-hat / black-hat, high-pass
  energy), how much the window's mean and standard deviation differ from the
  ring around it (the window enlarged by half its size), in units of the
  map's standard deviation over the image; summed over the maps;
- each shape keeps its best windows, up to ``SHARE_SLACK`` times an equal
  share of ``max_windows``, with NMS at ``SHAPE_NMS_IOU`` within the shape so
  one strong object does not take the whole share;
- order: every shape's best window, then every shape's second best, ...,
  cut at ``max_windows``; so any cap covers every size and aspect.

The windows are a pure function of the image and the parameters.
"""
from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

from detector.box_arrays import nms_array

# The ring a window is compared with: the window enlarged by this fraction of its
# size (half on each side), as in Alexe et al.'s centre-surround cue.
SURROUND = 0.5
# Windows of one shape overlapping more than this with a better one are dropped:
# 0.4 keeps neighbouring grid positions (IoU 0.67 at stride 0.2) out of one share.
SHAPE_NMS_IOU = 0.4
# How many times its equal share of the cap a shape may take (module docstring).
SHARE_SLACK = 3
# Each shape's best windows beyond its share are kept as candidates for NMS to
# choose from (NMS on all ~35,000 windows would cost more than the search).
CANDIDATES_PER_SHARE = 6
# Spots (pits, dots) up to this size in pixels light up the top-hat maps.
SPOT_KERNEL = 5
# Scale of the high-pass map: texture finer than this stays, shading goes.
HIGHPASS_SIGMA = 6.0


def _positions(extent: float, side: float, step: float) -> np.ndarray:
    """Left (or top) edges of windows of ``side`` spaced about ``step`` apart, spanning [0, extent]."""
    room = extent - side
    if room <= 0:
        return np.zeros(1, np.float32)
    count = int(math.ceil(room / step)) + 1
    return np.linspace(0.0, room, count, dtype=np.float32)


def _window_shapes(width: int, height: int, min_size: float, scales_per_octave: int,
                   aspects: Sequence[float]) -> list[tuple[float, float]]:
    """(w, h) of every size x aspect, larger sizes first; duplicates after clipping removed."""
    largest = math.sqrt(width * height)
    smallest = max(float(min_size), 1.0)
    if largest < smallest:
        return []
    steps = int(math.floor(math.log2(largest / smallest) * scales_per_octave + 1e-9))
    sizes = [largest / 2 ** (k / scales_per_octave) for k in range(steps + 1)]
    shapes: list[tuple[float, float]] = []
    for s in sizes:
        for a in aspects:
            w = min(float(width), s * math.sqrt(a))
            h = min(float(height), s / math.sqrt(a))
            if min(w, h) >= smallest and (w, h) not in shapes:
                shapes.append((w, h))
    return shapes


def shape_grid(width: int, height: int, w: float, h: float, stride: float) -> np.ndarray:
    """Every position of a w x h window at ``stride`` x its side: float32 [N, 4] (x1, y1, x2, y2)."""
    xs = _positions(width, w, max(1.0, stride * w))
    ys = _positions(height, h, max(1.0, stride * h))
    x0, y0 = (a.ravel() for a in np.meshgrid(xs, ys))
    return np.stack([x0, y0, x0 + w, y0 + h], axis=1).astype(np.float32)


def feature_maps(image: np.ndarray) -> list[np.ndarray]:
    """The maps the contrast is measured on, float64 [H, W] each, from RGB uint8 [H, W, 3]."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float64)
    gx, gy = cv2.Sobel(grey, cv2.CV_64F, 1, 0), cv2.Sobel(grey, cv2.CV_64F, 0, 1)
    spot = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (SPOT_KERNEL, SPOT_KERNEL))
    return [cv2.GaussianBlur(grey, (0, 0), 2), np.hypot(gx, gy),
            cv2.morphologyEx(grey, cv2.MORPH_TOPHAT, spot), cv2.morphologyEx(grey, cv2.MORPH_BLACKHAT, spot),
            np.abs(grey - cv2.GaussianBlur(grey, (0, 0), HIGHPASS_SIGMA))]


def _box_sums(integral: np.ndarray, corners: tuple[np.ndarray, ...]) -> np.ndarray:
    x0, y0, x1, y1 = corners
    return integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]


def _pixel_corners(boxes: np.ndarray, width: int, height: int) -> tuple[np.ndarray, ...]:
    r = np.round(boxes).astype(np.int64)
    return (np.clip(r[:, 0], 0, width), np.clip(r[:, 1], 0, height),
            np.clip(r[:, 2], 0, width), np.clip(r[:, 3], 0, height))


def integral_maps(maps: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """(integral of the map, integral of its square, its spread over the image) for each map."""
    return [(cv2.integral(m, sdepth=cv2.CV_64F), cv2.integral(m * m, sdepth=cv2.CV_64F), m.std() + 1e-6)
            for m in maps]


def contrast_scores(integrals: list[tuple[np.ndarray, np.ndarray, float]], boxes: np.ndarray) -> np.ndarray:
    """Centre-surround contrast (module docstring) of boxes [N, 4]: float64 [N].

    ``integrals``: :func:`integral_maps` of :func:`feature_maps`.
    """
    height, width = (n - 1 for n in integrals[0][0].shape)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    ring = boxes + np.stack([-w, -h, w, h], axis=1) * (SURROUND / 2)
    inner, outer = _pixel_corners(boxes, width, height), _pixel_corners(ring, width, height)
    area_in = np.maximum((inner[2] - inner[0]) * (inner[3] - inner[1]), 1)
    area_out = (outer[2] - outer[0]) * (outer[3] - outer[1])
    area_ring = np.maximum(area_out - area_in, 1)
    score = np.zeros(len(boxes))
    for total, total_sq, spread in integrals:
        sums = [_box_sums(total, c) for c in (inner, outer)]
        squares = [_box_sums(total_sq, c) for c in (inner, outer)]
        mean_in, mean_ring = sums[0] / area_in, (sums[1] - sums[0]) / area_ring
        std_in = np.sqrt(np.maximum(squares[0] / area_in - mean_in ** 2, 0))
        std_ring = np.sqrt(np.maximum((squares[1] - squares[0]) / area_ring - mean_ring ** 2, 0))
        score += (np.abs(mean_in - mean_ring) + np.abs(std_in - std_ring)) / spread
    # A window with (almost) no ring around it, e.g. the whole image, has nothing to stand out from.
    score[area_out <= area_in * 1.05] = 0.0
    return score


def dense_windows(image: np.ndarray, *, min_size: float, max_windows: int, scales_per_octave: int = 3,
                  aspects: Sequence[float] = (0.5, 1.0, 2.0), stride: float = 0.2) -> np.ndarray:
    """The ranked dense grid of an RGB uint8 [H, W, 3] image (see the module docstring).

    Returns:
        float32 [N, 4] (x1, y1, x2, y2), 0-based continuous pixels inside the
        image, N <= max_windows, in rank order.
    """
    height, width = image.shape[:2]
    shapes = _window_shapes(width, height, min_size, scales_per_octave, aspects)
    if max_windows <= 0 or not shapes:
        return np.zeros((0, 4), np.float32)
    integrals = integral_maps(feature_maps(image))
    # A shape with few good windows leaves room: each may take SHARE_SLACK times
    # its share, and the round-robin order below then fills the cap.
    share = max(1, max_windows // len(shapes)) * SHARE_SLACK
    picked, ranks = [], []
    for w, h in shapes:
        grid = shape_grid(width, height, w, h, stride)
        score = contrast_scores(integrals, grid)
        best = np.argsort(-score, kind="stable")[:share * CANDIDATES_PER_SHARE]
        keep = nms_array(grid[best], score[best].astype(np.float32), SHAPE_NMS_IOU)[:share]
        picked.append(grid[best[keep]])
        ranks.append(np.arange(len(keep)))
    order = np.argsort(np.concatenate(ranks), kind="stable")  # every shape's best, then second best, ...
    return np.concatenate(picked)[order][:max_windows]


