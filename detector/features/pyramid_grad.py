"""The window pyramid with a gradient (conv fine-tuning), its backward one scatter.

Pooling windows through autograd op by op (a slice and a max per bin and
window) made the backward pass build a gradient the size of the whole map
for every window and sum them: ~60% of a conv fine-tuning iteration on the
prefix route (cProfile, issue 23). Here the forward pass finds each bin's
maximum and where it is (the same two-stage max over rows, then columns, and
the same bins as :class:`detector.features.spp.SpatialPyramidPool2d`'s exact rule),
and the backward pass adds every bin's gradient into its maximum's cell with
one ``index_add_``. Values are the exact engine's; the gradient is autograd's
wherever a bin has one maximum (on a tie the first cell, row-major, takes it
all: after a ReLU or ReLU6 a tied cell is at the clip, whose gradient is
0 either way).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .spp import bin_edges


def _edges(size: int, n: int, memo: dict) -> tuple[list[int], list[int]]:
    """Exact-rule bins of ``n`` along ``size`` cells, remembered per call (windows repeat sizes)."""
    if (size, n) not in memo:
        lo, hi = bin_edges(torch.tensor([size]), n, "exact")
        memo[size, n] = (lo[0].tolist(), hi[0].tolist())
    return memo[size, n]


@torch.no_grad()
def pyramid_argmax(feature_map: Tensor, cells: Tensor, levels: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Each window's pyramid and where each value came from.

    Args:
        feature_map: [C, H, W]; cells: [N, 4] half-open (x0, y0, x1, y1), checked by the caller.
    Returns:
        (values [N, D], flat indices [N, D] into ``feature_map.reshape(-1)``), D = C * sum(n*n),
        in :class:`detector.features.pyramid.SpatialPyramidPool`'s layout (per level [n, n, C]).
    """
    channels, height, width = feature_map.shape
    plane = torch.arange(channels).mul_(height * width)[:, None, None]  # channel offsets [C, 1, 1]
    memo: dict = {}
    values, places = [], []
    for x0, y0, x1, y1 in cells.tolist():
        crop = feature_map[:, y0:y1, x0:x1]
        row_v, row_y = [], []
        level_v, level_i = [], []
        for n in levels:
            ylo, yhi = _edges(y1 - y0, n, memo)
            xlo, xhi = _edges(x1 - x0, n, memo)
            row_v.clear(), row_y.clear()
            for a, b in zip(ylo, yhi):
                v, i = crop[:, a:b, :].max(dim=1)  # [C, w]: each column's max over the bin's rows
                row_v.append(v), row_y.append(i + a)
            rows, ys = torch.stack(row_v, 1), torch.stack(row_y, 1)  # [C, n, w]
            col_v, col_x = [], []
            for a, b in zip(xlo, xhi):
                v, i = rows[:, :, a:b].max(dim=2)  # [C, n]
                col_v.append(v), col_x.append(i + a)
            bins, xs = torch.stack(col_v, 2), torch.stack(col_x, 2)  # [C, n, n]
            flat = plane + (ys.gather(2, xs) + y0) * width + (xs + x0)
            level_v.append(bins.permute(1, 2, 0).reshape(-1))
            level_i.append(flat.permute(1, 2, 0).reshape(-1))
        values.append(torch.cat(level_v))
        places.append(torch.cat(level_i))
    return torch.stack(values), torch.stack(places)


class PyramidMax(torch.autograd.Function):
    """``PyramidMax.apply(feature_map, cells, levels)``: :func:`pyramid_argmax`'s values, with
    a gradient to ``feature_map``."""

    @staticmethod
    def forward(ctx, feature_map: Tensor, cells: Tensor, levels: tuple[int, ...]) -> Tensor:
        values, index = pyramid_argmax(feature_map.detach(), cells, levels)
        ctx.save_for_backward(index)
        ctx.map_shape = feature_map.shape
        return values

    @staticmethod
    def backward(ctx, grad: Tensor):
        (index,) = ctx.saved_tensors
        flat = grad.new_zeros(ctx.map_shape.numel()).index_add_(0, index.reshape(-1), grad.reshape(-1))
        return flat.view(ctx.map_shape), None, None
