"""Scale selection and window -> cell mapping on numpy arrays: the rules, without torch.

SPP-net's two geometric steps between an image's windows and its conv5
maps (paper Sec. 4.1 and Appendix A), written once on numpy so that the
training code (through :mod:`detector.features.pyramid`, which wraps them for
tensors) and the torch-free ONNX runtime (:mod:`detector.deploy`) map every
window to the same cells:

1. :func:`select_scale_indices`: per window, the scale at which its area is
   closest to ``CANONICAL_WINDOW`` squared (or the official side rule);
   :func:`scale_windows`: its coordinates in that scale's resized image;
2. :func:`map_windows_to_cells`: a window in the resized image -> the
   half-open range of cells of the backbone's :class:`FeatureGrid` whose
   centres lie inside it (derivation in docs/window_mapping.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

# SPP-net scale selection: the scale whose scaled window area is closest to
# 224 x 224, the crop size the network was pre-trained on (paper, Sec. 4.1).
CANONICAL_WINDOW = 224
# The paper's 4-level pyramid for detection: 6x6 + 3x3 + 2x2 + 1x1 = 50 bins.
DEFAULT_LEVELS = (6, 3, 2, 1)
# Window mapping: each edge moves inwards by this many strides before it is
# rounded to the nearest cell centre; 0.5 keeps exactly the cells whose
# centres lie inside the window (Appendix A).
DEFAULT_WINDOW_MARGIN = 0.5
# Bump when the window -> cell rule changes: training stages keyed by it are
# recomputed, and exported models record it (2: the official rule on each
# backbone's measured cell centres).
MAPPING_VERSION = 2


@dataclass(frozen=True)
class FeatureGrid:
    """Where a backbone's conv5 cells sit in its input image.

    Cell j (0-based) along either axis is centred on 0-based pixel
    ``stride * j + offset``, i.e. at continuous coordinate
    ``stride * j + offset + 0.5`` (pixel i covers [i, i + 1)). The offset
    depends on the network's padding: 0 when every layer pads floor(p/2)
    (ZF-5 as in the paper), 7.5 for VGG-16's conv5_3 (2x2 pools), 15 for
    AlexNet, 17 for SqueezeNet 1.0 (table in docs/window_mapping.md); the
    backbone tests measure it by back-propagating from one cell.
    """
    stride: int
    offset: float = 0.0

    def __post_init__(self):
        if self.stride <= 0:
            raise ValueError(f"FeatureGrid: stride must be positive, got {self.stride}")


def select_scale_indices(boxes: np.ndarray, scale_factors: Sequence[float],
                         canonical: int = CANONICAL_WINDOW, rule: str = "area",
                         min_side: int | None = None) -> np.ndarray:
    """Pick one scale per window (SPP-net multi-scale testing).

    Args:
        boxes: [N, 4] windows (x1, y1, x2, y2) in ORIGINAL image pixels.
        scale_factors: one factor per scale; resized size = original * factor.
        canonical: the target side T: 224 in the paper's words, 208 in the
            official ZF-5 model (13 cells of 16 px).
        rule: "area": the scale where the scaled window's area
            ``area * factor**2`` is closest to T**2. "side": the official
            ``spm_expected_scale.m:17-21`` with ``spp_features_convX_to_poolX.m:39``:
            the scale whose shorter side ``factor * min_side`` is nearest
            ``round(T * min_side / sqrt(area))``, the shorter side at which the
            window's side would be T (MATLAB's +1 pixel sides are our
            continuous widths; the area is taken as at least 1 px^2). Between
            neighbouring scales a < b "side" switches to b where the ideal
            side passes (a + b) / 2, "area" where it passes sqrt((a^2 + b^2) / 2).
        min_side: the original image's shorter side (rule "side" only).
    Returns:
        int64 [N]: index into ``scale_factors`` of the chosen scale. Ties go
        to the smaller factor (less computation and less up-sampling; the
        official code's first minimum over its ascending scales), whatever
        order the factors were given in.
    """
    if len(scale_factors) == 0:
        raise ValueError("select_scales: scale_factors is empty")
    factors = np.asarray(list(scale_factors), dtype=np.float64)
    if not (factors > 0).all():
        raise ValueError(f"select_scales: scale factors must be positive, got {list(scale_factors)}")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    # Visit the factors in ascending order so argmin's "first minimum" rule
    # sends ties to the smaller factor; map back to the caller's indices.
    order = np.argsort(factors, kind="stable")
    if rule == "area":
        diff = np.abs(area[:, None] * factors[order][None, :] ** 2 - float(canonical) ** 2)
    elif rule == "side":
        if min_side is None or min_side <= 0:
            raise ValueError("select_scales: rule 'side' needs the image's shorter side (min_side > 0)")
        expected = np.floor(canonical * min_side / np.sqrt(np.maximum(area, 1.0)) + 0.5)  # MATLAB round
        # factor * min_side is the scale s up to float error (factor = s / min_side):
        # rounded to 1e-6 px so a window exactly between two scales ties as it does in MATLAB.
        side = np.round(factors[order] * min_side * 1e6) / 1e6
        diff = np.abs(side[None, :] - expected[:, None])
    else:
        raise ValueError(f"select_scales: rule {rule!r} must be area or side")
    return order[diff.argmin(axis=1)].astype(np.int64)


def map_windows_to_cells(boxes: np.ndarray, grid: FeatureGrid, map_height: int, map_width: int,
                         margin: float = DEFAULT_WINDOW_MARGIN) -> np.ndarray:
    """Project windows onto feature-map cells (SPP-net Appendix A, the official rule).

    In cell units u(x) = (x - c) / S, where S = ``grid.stride`` and c =
    ``grid.offset + 0.5`` is cell 0's centre in continuous coordinates, each
    axis of a window [X1, X2) maps to the inclusive cell range::

        first = floor(u(X1) + margin + 0.5)     (official: left/top)
        last  = ceil(u(X2) - margin - 0.5)      (official: right/bottom)

    then an inverted range (first > last) collapses to its midpoint
    floor((first + last) / 2), and both ends are clamped to the map. With
    the default margin of half a stride this keeps exactly the cells whose
    centres lie inside the window, Appendix A's rule ("left edge -> floor(x/S)
    + 1, right edge -> ceil(x/S) - 1" for 0-based cells centred on S*x'); it
    is ShaoqingRen/SPP_net's ``spm_pool_caffe_mex.cpp`` with its ``offset``
    = margin * S - 0.5 pixels (its boxes are 1-based pixel indices). The kept
    span is centred on the window to within half a stride, without bias.
    docs/window_mapping.md derives it, with a worked example.

    Args:
        boxes: [N, 4] windows (x1, y1, x2, y2) in the RESIZED image's 0-based
            continuous pixel coordinates.
        grid: the backbone's cell grid (stride and centre offset).
        map_height, map_width: size of the feature map, in cells.
        margin: how far (in strides) each edge moves inwards before it is
            rounded to the nearest cell centre: 0.5 keeps the cells whose
            centres are inside the window, 0 also the nearest one outside
            each edge when that is closer than half a stride.
    Returns:
        int64 [N, 4] cell ranges (x0, y0, x1, y1), half-open
        [x0, x1) x [y0, y1), with 0 <= x0 < x1 <= map_width and likewise y.
    """
    if map_height <= 0 or map_width <= 0:
        raise ValueError(f"map_windows_to_features: map size ({map_height}x{map_width}) "
                         "must be positive")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if not np.isfinite(boxes).all():
        raise ValueError("map_windows_to_features: boxes contain NaN or infinite values")
    x0, x1 = _map_axis(boxes[:, 0], boxes[:, 2], grid, margin, map_width)
    y0, y1 = _map_axis(boxes[:, 1], boxes[:, 3], grid, margin, map_height)
    return np.stack([x0, y0, x1, y1], axis=1)


def _map_axis(lo: np.ndarray, hi: np.ndarray, grid: FeatureGrid, margin: float,
              size: int) -> tuple[np.ndarray, np.ndarray]:
    """One axis of :func:`map_windows_to_cells`: float64 edges -> int64 [c0, c1)."""
    centre0 = grid.offset + 0.5
    first = np.floor((lo - centre0) / grid.stride + margin + 0.5).astype(np.int64)
    last = np.ceil((hi - centre0) / grid.stride - margin - 0.5).astype(np.int64)
    mid = (first + last) // 2  # floor division, as the rule says
    inverted = first > last
    first = np.clip(np.where(inverted, mid, first), 0, size - 1)
    last = np.clip(np.where(inverted, mid, last), 0, size - 1)
    return first, last + 1


def scale_windows(windows, factor: float, scaling: str, min_side: int | None = None):
    """Windows [N, 4] (a numpy array or a tensor) of the original image in the image resized by ``factor``.

    Both are in 0-based continuous pixel coordinates (pixel i covers [i, i + 1)).
    "plain" multiplies by ``factor``. "corner" is the official
    ``spp_features_convX_to_poolX.m:45``, ``(b - 1) * (s - 1) / (m - 1) + 1``
    on 1-based pixel indices b, with s = factor * m the scaled shorter side
    and m = ``min_side`` the original one: it maps pixel centres so that the
    first and last pixels' centres stay on the first and last pixels'
    centres, with rho = (s - 1) / (m - 1). Its box is the inclusive range of
    pixel indices [l, r], i.e. our [X1, X2) = [l - 1, r): the left pixel's
    index l -> (l - 1) * rho + 1 makes X1' = X1 * rho, and the right pixel's
    r -> (r - 1) * rho + 1 makes X2' = (X2 - 1) * rho + 1. Each edge keeps
    half a pixel around its corner pixel's moved centre; "plain" moves the
    edges themselves. The two differ by at most factor - 1 px, at a left edge
    on the last pixel or a right edge on the first (2.2 px for VOC's 375 px
    shorter side at scale 1200).
    """
    if scaling == "plain":
        return windows * factor
    if scaling != "corner":
        raise ValueError(f"scale_windows: scaling {scaling!r} must be plain or corner")
    if min_side is None:
        raise ValueError("scale_windows: corner scaling needs the image's shorter side")
    if min_side <= 1:  # one pixel: no two centres to align
        return windows * factor
    rho = (factor * min_side - 1.0) / (min_side - 1.0)
    out = windows * rho
    out[:, 2:] = (windows[:, 2:] - 1.0) * rho + 1.0
    return out
