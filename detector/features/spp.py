"""A reusable spatial pyramid pooling layer for [N, C, H, W] maps, and its bin rules.

SPP-net (He et al. 2014, Sec. 2.3) max-pools a conv map of any size into n x n
bins for each pyramid level and concatenates the results: a fixed-length
vector from an input of any size, so the fc layers after it accept images of
any size. Usage, with nothing else of the detector::

    from detector.features.spp import SpatialPyramidPool2d
    spp = SpatialPyramidPool2d(levels=(4, 2, 1), rule="paper")
    vec = spp(torch.randn(8, 256, 13, 17))     # [8, 256 * (16 + 4 + 1)]

Two bin rules, along each axis of a map ``a`` cells long, bin i of n:

- ``"exact"`` (the detector's): cells [floor(i*a/n), ceil((i+1)*a/n)).
  Every cell is in some bin; bins overlap when n does not divide a and
  repeat cells when a < n, so any a >= 1 works. torchvision's
  ``adaptive_max_pool2d`` uses the same bins.
- ``"paper"`` (Sec. 2.3: window ceil(a/n), stride floor(a/n)): cells
  [i*floor(a/n), i*floor(a/n) + ceil(a/n)). Needs a >= n (the stride would
  be 0); when n does not divide a the last a - n*floor(a/n) - 1 cells fall in
  no bin (e.g. a = 8, n = 6: cell 7), as in a pooling layer with those
  window and stride, whose first n outputs these are.

This module is the one place the bin arithmetic lives: the detector's
window pyramid (:mod:`detector.features.pyramid_engine`, :mod:`detector.features.pyramid`) takes
its exact bins from :func:`bin_edges`.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

BIN_RULES = ("exact", "paper")


def bin_edges(size: Tensor, n: int, rule: str = "exact") -> tuple[Tensor, Tensor]:
    """Bins of ``n`` along an axis of ``size`` cells, per rule (module docstring).

    Args:
        size: LongTensor [N] of axis lengths in cells (>= 1; >= n for "paper").
        n: bins per axis (the pyramid level).
        rule: "exact" or "paper".
    Returns:
        (lo, hi): LongTensors [N, n], bin i covers cells [lo, hi) relative to
        the start of the axis; 0 <= lo < hi <= size.
    """
    i = torch.arange(n, dtype=torch.long, device=size.device)[None, :]
    size = size.long()[:, None]
    if rule == "exact":
        lo = torch.div(i * size, n, rounding_mode="floor")
        # ceil(a / n) = -floor(-a / n) for integers.
        return lo, -torch.div(-(i + 1) * size, n, rounding_mode="floor")
    if rule == "paper":
        stride = torch.div(size, n, rounding_mode="floor")
        window = -torch.div(-size, n, rounding_mode="floor")
        lo = i * stride
        return lo, lo + window
    raise ValueError(f"unknown SPP bin rule {rule!r}; choose one of {', '.join(BIN_RULES)}")


def min_map_size(levels: Sequence[int], rule: str = "exact") -> int:
    """Smallest map side (cells) that ``levels`` allow under ``rule``: 1 for "exact"
    (bins repeat cells), the finest level for "paper" (its stride must be >= 1)."""
    if rule not in BIN_RULES:
        raise ValueError(f"unknown SPP bin rule {rule!r}; choose one of {', '.join(BIN_RULES)}")
    return max(levels) if rule == "paper" else 1


class SpatialPyramidPool2d(nn.Module):
    """Max-pool [N, C, H, W] maps into n x n bins per level, concatenated.

    Output: [N, C * sum(n*n)]; per level in the order given, the bins as
    [C, n, n] flattened (channel-major, the layout of Caffe's SPP layer and
    torchvision's pools). Differentiable: the gradient of each bin goes to
    its maximum (equal maxima share it). Bins follow ``rule`` (module
    docstring); inputs smaller than :func:`min_map_size` raise ValueError.

    Args:
        levels: bins per side of each level, e.g. the paper's (6, 3, 2, 1)
            (50 bins) or (4, 2, 1) for its classification nets.
        rule: "exact" (the detector's) or "paper" (ceil window, floor stride).
    """

    def __init__(self, levels: Sequence[int] = (6, 3, 2, 1), rule: str = "exact"):
        super().__init__()
        levels = tuple(int(n) for n in levels)
        if not levels or any(n <= 0 for n in levels):
            raise ValueError(f"SpatialPyramidPool2d: levels must be positive integers, got {levels}")
        self.levels = levels
        self.rule = rule
        self.min_size = min_map_size(levels, rule)

    def output_dim(self, channels: int) -> int:
        """Length of one pooled vector: channels * sum(n*n)."""
        return channels * sum(n * n for n in self.levels)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, rule={self.rule!r}"

    def pool_levels(self, x: Tensor) -> list[Tensor]:
        """x [N, C, H, W] -> one [N, C, n, n] per level."""
        if x.dim() != 4:
            raise ValueError(f"SpatialPyramidPool2d: expected [N, C, H, W], got {tuple(x.shape)}")
        height, width = x.shape[2], x.shape[3]
        if min(height, width) < self.min_size:
            raise ValueError(
                f"SpatialPyramidPool2d: a {height}x{width} map is smaller than the "
                f"{self.min_size}x{self.min_size} that levels {self.levels} need with the "
                f"{self.rule!r} bin rule; use larger inputs or coarser levels")
        return [_pool_level(x, n, self.rule) for n in self.levels]

    def forward(self, x: Tensor) -> Tensor:
        """x [N, C, H, W] -> [N, C * sum(n*n)]."""
        return torch.cat([p.flatten(1) for p in self.pool_levels(x)], dim=1)


def _pool_level(x: Tensor, n: int, rule: str) -> Tensor:
    """One level: the max over a rectangle is the max over its columns of the
    max over its rows, so 2n reductions instead of n*n."""
    height, width = x.shape[2], x.shape[3]
    ylo, yhi = (t[0].tolist() for t in bin_edges(torch.tensor([height]), n, rule))
    xlo, xhi = (t[0].tolist() for t in bin_edges(torch.tensor([width]), n, rule))
    rows = torch.stack([x[:, :, a:b, :].amax(dim=2) for a, b in zip(ylo, yhi)], dim=2)  # [N, C, n, W]
    return torch.stack([rows[:, :, :, a:b].amax(dim=3) for a, b in zip(xlo, xhi)], dim=3)
