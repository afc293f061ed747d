"""The window pyramid with a gradient (conv fine-tuning), its backward one scatter.

Pooling windows through autograd op by op (a slice and a max per bin and
window) made the backward pass build a gradient the size of the whole map
for every window and sum them: ~60% of a conv fine-tuning iteration on the
prefix route (cProfile, issue 23). Here the forward pass finds each bin's
maximum and where it is (the same two-stage max over rows, then columns, and
the same bins as :class:`detector.features.spp.SpatialPyramidPool2d`'s exact rule),
and the backward pass adds every bin's gradient into its maximum's cell with
one ``index_add_``. Values are the exact engine's; the gradient is autograd's
wherever a bin has one maximum (on a tie the cell of the smallest column,
then the smallest row, takes it all: after a ReLU or ReLU6 a tied cell is at
the clip, whose gradient is 0 either way).

The forward pass is vectorised over windows (issue 23: a Python loop of
slices and maxima per window and bin took ~56% of a conv fine-tuning
iteration): range-maximum tables, first along rows (each column's maximum
over a bin's rows), then the bins' maxima over the concatenated columns of
every (window, row bin), and a coarser level whose bins are unions of a
finer one's reduced from it. Each cell is one int64 holding its value's
bits (made monotone) over its place, so every maximum is one integer max
that also keeps the smallest (column, row) among the tied (no separate
tensor of places, no compare-and-select per step). The same values and
places as the two-stage loop it replaced (tests/detector/test_pyramid_grad.py
keeps that loop as the reference), NaN included (a NaN outranks every
number, as max() carries it).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .pyramid_engine import _bin_edges
from .pyramid_plan import plan_levels
from .spp import bin_edges


def _floor_log2(sizes: Tensor, largest: int) -> Tensor:
    """floor(log2(size)) of sizes in [1, largest], exactly (integer bit lengths)."""
    table = torch.tensor([0] + [k.bit_length() - 1 for k in range(1, largest + 1)], dtype=torch.long)
    return table[sizes]


# Each cell of a float32 map as one int64 whose order is (value, then the smaller place):
# the value's bits made monotone in the high 32 bits, NO_PLACE - key in the low 32 bits
# (key = column * H + row < 2**31). Every maximum below is then one max of integers: the
# value and the place of its first maximum (smallest column, then row) come together.
_NO_PLACE = (1 << 31) - 1
_SIGNLESS = 0x7FFFFFFF
_NAN = 0x7FC00000  # every NaN as this one: above +inf, as max() carries a NaN
_CHUNK = 256  # windows pooled at a time: the tables grow with the windows' columns


def _encode(cells_map: Tensor) -> Tensor:
    """[H, W, C] float32 -> [H, W, C] int64 ordered by value, then by smaller key."""
    height, width, _ = cells_map.shape
    if height * width >= _NO_PLACE:
        raise ValueError(f"a {height} x {width} map has too many cells for the pyramid's places")
    bits = (cells_map + 0.0).contiguous().view(torch.int32)  # + 0.0: -0.0 ties with 0.0, as max() has it
    bits = torch.where(torch.isnan(cells_map), _NAN, bits)
    ordered = torch.where(bits >= 0, bits, bits ^ _SIGNLESS).long()
    key = torch.arange(width)[None, :, None] * height + torch.arange(height)[:, None, None]  # [H, W, 1]
    return (ordered << 32) | (_NO_PLACE - key)


def _keys(encoded: Tensor) -> Tensor:
    """The keys (column * H + row) of encoded cells (their values are read from the map there)."""
    return _NO_PLACE - (encoded & 0xFFFFFFFF)


def _range_max_tables(encoded: Tensor, levels: int) -> Tensor:
    """Range-maximum tables along dim 0 of ``encoded`` [L, ...]: a [levels + 1, L, ...] tensor whose
    entry (k, i) is the max over rows [i, i + 2^k); rows past L - 2^k are not set."""
    length = encoded.shape[0]
    table = encoded.new_empty((levels + 1, *encoded.shape))
    table[0] = encoded
    for k in range(1, levels + 1):
        half, rows = 1 << (k - 1), length - (1 << k) + 1
        torch.maximum(table[k - 1, :rows], table[k - 1, half:half + rows], out=table[k, :rows])
    return table


def _direct_level(encoded: Tensor, cells: Tensor, n: int) -> Tensor:
    """Level ``n`` of every window pooled from the encoded map [H, W, C]: [N, n, n, C] encoded maxima."""
    height, width, channels = encoded.shape
    x0, y0, x1, y1 = cells.unbind(1)
    ylo, yhi = _bin_edges(y0, y1 - y0, n)
    xlo, xhi = _bin_edges(x0, x1 - x0, n)
    count = len(cells)
    # Stage 1: every (window, row bin) pair's columns, concatenated: their maxima over the bin's rows.
    pair_width = (x1 - x0).repeat_interleave(n)  # pair p = window * n + row bin
    starts = torch.cumsum(pair_width, 0) - pair_width
    pair = torch.repeat_interleave(torch.arange(count * n), pair_width)
    column = x0[pair // n] + torch.arange(len(pair)) - starts[pair]
    row_lo, row_hi = ylo.reshape(-1)[pair], yhi.reshape(-1)[pair]
    table = _range_max_tables(encoded, int(_floor_log2((yhi - ylo).max().view(1), height)))
    # The table as rows of C: table k's cell (row, column) is row (k * H + row) * W + column. A
    # column's maximum over a row bin is that of the two power-of-two row ranges at its ends.
    flat = table.view(-1, channels)
    k = _floor_log2(row_hi - row_lo, height)
    first = (k * height + row_lo) * width + column
    second = (k * height + row_hi - (1 << k)) * width + column
    col = torch.maximum(flat.index_select(0, first), flat.index_select(0, second))  # [L, C]
    # Stage 2: each bin's maximum over its columns [lo, lo + span) of the concatenated ones,
    # from range-maximum tables along them: two power-of-two ranges per bin again.
    lo = (starts.view(count, n, 1) + (xlo - x0[:, None]).view(count, 1, n)).reshape(-1)  # (window, i, j)
    span = (xhi - xlo).view(count, 1, n).expand(count, n, n).reshape(-1)
    widest = int(span.max())
    flat = _range_max_tables(col, int(_floor_log2(span.new_tensor([widest]), widest))).view(-1, channels)
    k = _floor_log2(span, widest)
    first, second = k * len(col) + lo, k * len(col) + lo + span - (1 << k)
    return torch.maximum(flat.index_select(0, first), flat.index_select(0, second)).view(count, n, n, channels)


def _derived_level(encoded: Tensor, n: int) -> Tensor:
    """Level ``n`` from a finer level m = k * n ([N, m, m, C] encoded): bin (i, j) is the union of
    bins (k*i .. k*i + k - 1, k*j .. k*j + k - 1)."""
    count, m, _, channels = encoded.shape
    k = m // n
    return encoded.view(count, n, k, n, k, channels).amax(dim=(2, 4))


@torch.no_grad()
def pyramid_argmax(feature_map: Tensor, cells: Tensor, levels: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Each window's pyramid and where each value came from.

    Args:
        feature_map: [C, H, W]; cells: [N, 4] half-open (x0, y0, x1, y1), checked by the caller.
    Returns:
        (values [N, D], flat indices [N, D] into ``feature_map.reshape(-1)``), D = C * sum(n*n),
        in :class:`detector.features.pyramid.SpatialPyramidPool`'s layout (per level [n, n, C]).
        A bin's place is its first maximum: the smallest column, then the smallest row.
    """
    if feature_map.dtype == torch.float64:  # no room for a key beside 64 value bits: the loop
        return pyramid_argmax_loop(feature_map, cells, levels)
    channels, height, width = feature_map.shape
    cells = cells.long()
    if len(cells) == 0:
        empty = torch.zeros((0, channels * sum(n * n for n in levels)), dtype=torch.long)
        return feature_map.new_zeros(empty.shape), empty
    direct, derived = plan_levels(tuple(levels))
    # float16 and bfloat16 maps are ordered through float32 (exactly: their values are float32 values)
    encoded = _encode(feature_map.float().permute(1, 2, 0))
    keys = []
    for part in cells.split(_CHUNK):
        found = {n: _direct_level(encoded, part, n) for n in direct}
        for n in sorted(derived, reverse=True):  # a finer level first: it may be derived too
            found[n] = _derived_level(found[derived[n]], n)
        keys.append(_keys(torch.cat([found[n].reshape(len(part), -1) for n in levels], 1)))
    keys = torch.cat(keys)
    channel = torch.arange(keys.shape[1]) % channels  # the layout is [n, n, C] per level
    index = channel * (height * width) + (keys % height) * width + keys // height
    return feature_map.reshape(-1)[index], index  # each bin's value as it is in the map (-0.0 too)


def _loop_edges(size: int, n: int, memo: dict) -> tuple[list[int], list[int]]:
    """Exact-rule bins of ``n`` along ``size`` cells, remembered per call (windows repeat sizes)."""
    if (size, n) not in memo:
        lo, hi = bin_edges(torch.tensor([size]), n, "exact")
        memo[size, n] = (lo[0].tolist(), hi[0].tolist())
    return memo[size, n]


@torch.no_grad()
def pyramid_argmax_loop(feature_map: Tensor, cells: Tensor, levels: Sequence[int]) -> tuple[Tensor, Tensor]:
    """:func:`pyramid_argmax` (the same arguments and results) as a loop of slices and a
    two-stage max per window and bin: what it replaced (~5x slower), kept as the reference its
    tests and bench/finetune_speed.py compare with."""
    channels, height, width = feature_map.shape
    plane = torch.arange(channels).mul_(height * width)[:, None, None]  # channel offsets [C, 1, 1]
    memo: dict = {}
    values, places = [], []
    for x0, y0, x1, y1 in cells.tolist():
        crop = feature_map[:, y0:y1, x0:x1]
        row_v, row_y = [], []
        level_v, level_i = [], []
        for n in levels:
            ylo, yhi = _loop_edges(y1 - y0, n, memo)
            xlo, xhi = _loop_edges(x1 - x0, n, memo)
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
