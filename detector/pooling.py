"""Scale selection, window -> feature-map mapping and spatial pyramid pooling.

The three steps between "conv5 maps for every scale" and "one fixed-length
vector per window" in SPP-net (He et al. 2014, Sections 2.3 and 4.1,
Appendix A):

1. :func:`select_scales` picks, per window, the scale at which the window's
   area is closest to 224 x 224 pixels.
2. :func:`map_windows_to_features` turns a window in the resized image into a
   half-open range of feature-map cells: the cells of the backbone's
   :class:`FeatureGrid` whose centres lie inside the window (Appendix A, in
   the official code's form; derivation in docs/window_mapping.md).
3. :class:`SpatialPyramidPool` max-pools each cell range into n x n bins for
   every pyramid level and concatenates the results.

Pooling is exact (same bins and maxima as the brute-force definition) and
fast on the CPU: bins are answered by a 2-D sparse table (range-maximum
query: at most four overlapping power-of-two blocks per bin, one or two
when a side is a power of two), and coarser levels that divide a finer one
are reduced from the finer level's bins. docs/benchmarks_pooling.md has the
figures.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from .pyramid_grad import PyramidMax
from .range_max import pool_into

# SPP-net scale selection: the scale whose scaled window area is closest to
# 224 x 224, the crop size the network was pre-trained on (paper, Sec. 4.1).
CANONICAL_WINDOW = 224
# The paper's 4-level pyramid for detection: 6x6 + 3x3 + 2x2 + 1x1 = 50 bins.
DEFAULT_LEVELS = (6, 3, 2, 1)
# Window mapping: each edge moves inwards by this many strides before it is
# rounded to the nearest cell centre; 0.5 keeps exactly the cells whose
# centres lie inside the window (Appendix A).
DEFAULT_WINDOW_MARGIN = 0.5


def select_scales(boxes: Tensor, scale_factors: Sequence[float],
                  canonical: int = CANONICAL_WINDOW) -> Tensor:
    """Pick one scale per window (SPP-net multi-scale testing).

    Args:
        boxes: [N, 4] windows (x1, y1, x2, y2) in ORIGINAL image pixels.
        scale_factors: one factor per scale; resized size = original * factor.
        canonical: the side of the target square area, 224 in the paper.
    Returns:
        LongTensor [N]: index into ``scale_factors`` of the scale where the
        scaled window's area ``area * factor**2`` is closest to canonical**2.
        Ties go to the smaller factor (less computation and less
        up-sampling), whatever order the factors were given in.
    """
    if len(scale_factors) == 0:
        raise ValueError("select_scales: scale_factors is empty")
    factors = torch.as_tensor(list(scale_factors), dtype=torch.float64)
    if not bool((factors > 0).all()):
        raise ValueError(f"select_scales: scale factors must be positive, got {list(scale_factors)}")
    boxes = boxes.reshape(-1, 4).to(torch.float64)
    area = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    # Visit the factors in ascending order so argmin's "first minimum" rule
    # sends ties to the smaller factor; map back to the caller's indices.
    order = torch.argsort(factors, stable=True)
    diff = (area[:, None] * factors[order][None, :] ** 2 - float(canonical) ** 2).abs()
    if diff.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long)
    return order[diff.argmin(dim=1)]


# Bump when the window -> cell rule changes: training stages keyed by it are
# recomputed (2: the official rule on each backbone's measured cell centres).
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


def map_windows_to_features(boxes: Tensor, grid: FeatureGrid, map_height: int, map_width: int,
                            margin: float = DEFAULT_WINDOW_MARGIN) -> Tensor:
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
        LongTensor [N, 4] of cell ranges (x0, y0, x1, y1), half-open
        [x0, x1) x [y0, y1), with 0 <= x0 < x1 <= map_width and likewise y.
    """
    if map_height <= 0 or map_width <= 0:
        raise ValueError(f"map_windows_to_features: map size ({map_height}x{map_width}) "
                         "must be positive")
    boxes = boxes.reshape(-1, 4).to(torch.float64)
    if not bool(torch.isfinite(boxes).all()):
        raise ValueError("map_windows_to_features: boxes contain NaN or infinite values")
    x = _map_axis(boxes[:, 0], boxes[:, 2], grid, margin, map_width)
    y = _map_axis(boxes[:, 1], boxes[:, 3], grid, margin, map_height)
    return torch.stack([x[0], y[0], x[1], y[1]], dim=1)


def _map_axis(lo: Tensor, hi: Tensor, grid: FeatureGrid, margin: float,
              size: int) -> tuple[Tensor, Tensor]:
    """One axis of :func:`map_windows_to_features`: float64 edges -> long [c0, c1)."""
    centre0 = grid.offset + 0.5
    first = torch.floor((lo - centre0) / grid.stride + margin + 0.5).long()
    last = torch.ceil((hi - centre0) / grid.stride - margin - 0.5).long()
    mid = torch.div(first + last, 2, rounding_mode="floor")
    inverted = first > last
    first = torch.where(inverted, mid, first).clamp(0, size - 1)
    last = torch.where(inverted, mid, last).clamp(0, size - 1)
    return first, last + 1


class SpatialPyramidPool(nn.Module):
    """Max-pool each window's cells into n x n bins for every pyramid level.

    Bin i (0-based) of n along an axis of a window w cells wide starting at
    cell x0 covers cells [x0 + floor(i*w/n), x0 + ceil((i+1)*w/n)): bins
    overlap when w is not a multiple of n and repeat cells when w < n.

    Output layout: for each level in the order given, the window's bins as
    [n, n, C] (bins-major, channels last: index (i*n + j)*C + c for bin row
    i, column j, channel c) flattened; levels concatenated. Length:
    :meth:`output_dim`. (torchvision's roi_pool and Caffe's SPP layer give
    [C, n, n]; :func:`to_channel_major` converts. Channels-last is what lets
    each bin's max be written as one contiguous C-vector, about 2x faster;
    the fc layers that read the vector do not care about the order.)

    The pooling is a fixed max with no parameters. SPP-net keeps the conv
    layers frozen and pools cached maps: without a gradient to carry (the
    map does not require one, or under ``torch.no_grad()`` /
    ``torch.inference_mode()``) the fast exact engine answers. When the map
    requires a gradient (fine-tuning conv layers through the pyramid), the
    same bins are max-pooled with a gradient (per window, the exact rule of
    :class:`detector.spp.SpatialPyramidPool2d`; ``detector.pyramid_grad``)
    and the gradient flows to each bin's maximum.
    """

    def __init__(self, levels: Sequence[int] = DEFAULT_LEVELS):
        super().__init__()
        levels = tuple(int(n) for n in levels)
        if not levels or any(n <= 0 for n in levels):
            raise ValueError(f"SpatialPyramidPool: levels must be positive integers, got {levels}")
        self.levels = levels

    def output_dim(self, channels: int) -> int:
        """Length of one window's pooled vector: channels * sum(n*n)."""
        return channels * sum(n * n for n in self.levels)

    def extra_repr(self) -> str:
        return f"levels={self.levels}"

    def forward(self, feature_map: Tensor, cells: Tensor) -> Tensor:
        """Pool windows of one feature map.

        Args:
            feature_map: [C, H, W] float conv map of one image at one scale.
            cells: LongTensor [N, 4] half-open cell ranges (x0, y0, x1, y1),
                as from :func:`map_windows_to_features`.
        Returns:
            [N, C * sum(n*n)] pooled features, dtype of ``feature_map``.
        """
        if feature_map.dim() != 3:
            raise ValueError("SpatialPyramidPool: feature_map must be [C, H, W], "
                             f"got {tuple(feature_map.shape)}")
        channels, height, width = feature_map.shape
        cells = _check_cells(cells, height, width)
        n_win = cells.shape[0]
        if feature_map.requires_grad and torch.is_grad_enabled():
            return self._pool_with_grad(feature_map, cells)
        out = feature_map.new_empty((n_win, self.output_dim(channels)))
        if n_win == 0:
            return out
        with torch.no_grad():
            pool_into(out, feature_map.detach(), cells, self.levels)
        return out


    def _pool_with_grad(self, feature_map: Tensor, cells: Tensor) -> Tensor:
        """The same bins and layout with a gradient (for training through the pyramid): each
        bin's maximum and its place, the backward one scatter (``detector.pyramid_grad``)."""
        if len(cells) == 0:
            return feature_map.new_zeros((0, self.output_dim(feature_map.shape[0])))
        return PyramidMax.apply(feature_map, cells, self.levels)


def to_channel_major(pooled: Tensor, channels: int, levels: Sequence[int]) -> Tensor:
    """Reorder pooled vectors from this module's layout (per level [n, n, C])
    to torchvision roi_pool's / Caffe's (per level [C, n, n]).

    Args:
        pooled: [N, C * sum(n*n)] output of :class:`SpatialPyramidPool`.
    Returns:
        [N, C * sum(n*n)], a new tensor.
    """
    parts, start = [], 0
    for n in levels:
        size = channels * n * n
        block = pooled[:, start:start + size].reshape(-1, n, n, channels)
        parts.append(block.permute(0, 3, 1, 2).reshape(-1, size))
        start += size
    if start != pooled.shape[1]:
        raise ValueError(f"to_channel_major: vectors of length {pooled.shape[1]} do not match "
                         f"{channels} channels and levels {tuple(levels)}")
    return torch.cat(parts, dim=1)


def _check_cells(cells: Tensor, height: int, width: int) -> Tensor:
    """Validate [N, 4] half-open cell ranges against an H x W map."""
    cells = torch.as_tensor(cells)
    if cells.dim() != 2 or cells.shape[1] != 4:
        raise ValueError(f"SpatialPyramidPool: cells must be [N, 4], got {tuple(cells.shape)}")
    if cells.is_floating_point():
        raise ValueError("SpatialPyramidPool: cells must be integer cell indices "
                         "(use map_windows_to_features)")
    cells = cells.long()
    if cells.shape[0] == 0:
        return cells
    x0, y0, x1, y1 = cells.unbind(1)
    ok = (x0 >= 0) & (y0 >= 0) & (x1 > x0) & (y1 > y0) & (x1 <= width) & (y1 <= height)
    if not bool(ok.all()):
        bad = cells[~ok][0].tolist()
        raise ValueError(f"SpatialPyramidPool: cell range {bad} is empty or outside the "
                         f"{height}x{width} map ({int((~ok).sum())} bad windows)")
    return cells
