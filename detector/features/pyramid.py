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

The rules of steps 1 and 2 live in :mod:`detector.features.mapping` (numpy, shared
with the torch-free runtime); the functions here wrap them for tensors.

Pooling is exact (same bins and maxima as the brute-force definition) and
fast on the CPU: bins are answered by a 2-D sparse table (range-maximum
query: at most four overlapping power-of-two blocks per bin, one or two
when a side is a power of two), and coarser levels that divide a finer one
are reduced from the finer level's bins. docs/benchmarks_pooling.md has the
figures.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from .mapping import (CANONICAL_WINDOW, DEFAULT_LEVELS, DEFAULT_WINDOW_MARGIN, MAPPING_VERSION,  # noqa: F401
                      FeatureGrid, map_windows_to_cells, select_scale_indices)
from .pyramid_grad import PyramidMax
from .pyramid_engine import pool_into


def select_scales(boxes: Tensor, scale_factors: Sequence[float],
                  canonical: int = CANONICAL_WINDOW, rule: str = "area",
                  min_side: int | None = None) -> Tensor:
    """Pick one scale per window (SPP-net multi-scale testing): LongTensor [N] of
    :func:`detector.features.mapping.select_scale_indices` (the rules, on numpy) for boxes [N, 4]
    in ORIGINAL image pixels; ties go to the smaller factor."""
    return torch.from_numpy(select_scale_indices(boxes.detach().cpu().numpy(), scale_factors, canonical,
                                                 rule, min_side))


def map_windows_to_features(boxes: Tensor, grid: FeatureGrid, map_height: int, map_width: int,
                            margin: float = DEFAULT_WINDOW_MARGIN) -> Tensor:
    """Project windows [N, 4] in the RESIZED image onto feature-map cells: LongTensor
    [N, 4] of half-open cell ranges (x0, y0, x1, y1) by
    :func:`detector.features.mapping.map_windows_to_cells` (the official rule, on numpy,
    shared with the torch-free runtime)."""
    return torch.from_numpy(map_windows_to_cells(boxes.detach().cpu().numpy(), grid, map_height,
                                                 map_width, margin))


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
    :class:`detector.features.spp.SpatialPyramidPool2d`; ``detector.features.pyramid_grad``)
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
        bin's maximum and its place, the backward one scatter (``detector.features.pyramid_grad``)."""
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
