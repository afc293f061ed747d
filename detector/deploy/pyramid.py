"""Spatial pyramid max-pooling of windows on a numpy conv5 map (the runtime's pool5).

The same bins, maxima and output layout as :class:`detector.features.pyramid.SpatialPyramidPool`
(tests/detector/test_deploy_pyramid.py checks equality on random maps and
windows): bin i of n along an axis of a window w cells wide starting at x0
covers cells [x0 + floor(i*w/n), x0 + ceil((i+1)*w/n)); per level the bins
as [n, n, C], levels concatenated.

ONNX's MaxRoiPool (one level per node, rois as inclusive cell ranges,
spatial_scale 1) gave the same bins as this module in a one-off check with
onnxruntime 1.32 (4000 random windows on a 43 x 57 map, every level of
(6, 3, 2, 1): no difference), but took 0.60 s for 2000 windows and the four
levels against 0.17 s here (1 thread, shared machine, not a recorded
benchmark), so the runtime pools in numpy.

The engine: a 2-D sparse table of power-of-two block maxima over the
channels-last map answers each bin of the levels pooled from the map with
four overlapping blocks (max is exact, so overlap is harmless); coarser
levels that divide a finer one are reduced from its bins
(:func:`detector.features.pyramid_plan.plan_levels`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..features.pyramid_plan import level_places, plan_levels

# Windows per chunk: a chunk's output rows (bins x C floats a window) stay in
# cache from the gathers through the derived levels. 16-48 measured alike
# (2000 windows, C = 96, 1 thread, under load: ~30-35 ms; 128 with the derived
# levels reduced over all windows at the end took ~40 ms quiet); any value
# gives the same result.
CHUNK_WINDOWS = 32


def pool_pyramid(feature_map: np.ndarray, cells: np.ndarray, levels: Sequence[int]) -> np.ndarray:
    """Pool windows of one conv5 map into the pyramid.

    Args:
        feature_map: float32 [C, H, W].
        cells: int64 [N, 4] half-open cell ranges (x0, y0, x1, y1) inside the map,
            as from :func:`detector.features.mapping.map_windows_to_cells`.
        levels: the pyramid, e.g. (6, 3, 2, 1).
    Returns:
        float32 [N, C * sum(n*n)].
    """
    levels = tuple(int(n) for n in levels)
    channels, height, width = feature_map.shape
    cells = np.asarray(cells, np.int64).reshape(-1, 4)
    bins = sum(n * n for n in levels)
    out = np.empty((len(cells), bins, channels), np.float32)
    if len(cells) == 0:
        return out.reshape(0, bins * channels)
    direct, derived = plan_levels(levels)
    places = level_places(levels)
    edges = {n: (_bin_edges(cells[:, 1], cells[:, 3], n), _bin_edges(cells[:, 0], cells[:, 2], n))
             for n in direct}
    tallest = max(int((hi - lo).max()) for (lo, hi), _ in edges.values())
    widest = max(int((hi - lo).max()) for _, (lo, hi) in edges.values())
    table = _SparseTable(np.ascontiguousarray(feature_map.transpose(1, 2, 0), np.float32), tallest, widest)
    rows = {n: table.corner_rows(*edges[n]) for n in direct}  # [4, N, n*n] each
    for lo in range(0, len(cells), CHUNK_WINDOWS):  # a chunk's rows stay in cache through its levels
        hi = min(lo + CHUNK_WINDOWS, len(cells))
        for n in direct:
            at = places[n][0]
            dest = out[lo:hi, at:at + n * n]
            np.take(table.buffer, rows[n][0, lo:hi], axis=0, out=dest)
            for corner in rows[n][1:, lo:hi]:
                np.maximum(dest, np.take(table.buffer, corner, axis=0), out=dest)
        for n, m in derived.items():  # finest first: a level derived from a derived level finds it done
            _reduce_bins(out[lo:hi, places[m][0]:places[m][0] + m * m],
                         out[lo:hi, places[n][0]:places[n][0] + n * n], m, n)
    for n, starts in places.items():  # a level listed twice is pooled once
        for start in starts[1:]:
            out[:, start:start + n * n] = out[:, starts[0]:starts[0] + n * n]
    return out.reshape(len(cells), bins * channels)


def _reduce_bins(fine: np.ndarray, coarse: np.ndarray, m: int, n: int) -> None:
    """Max over k x k groups of bins (k = m / n): ``fine`` [N, m*m, C] -> ``coarse`` [N, n*n, C],
    views into the output. Pairwise maxima of strided views, rows then columns: a
    ``max(axis=(2, 4))`` over the same groups measured ~3x slower (15 of 42 ms at
    2000 windows, C = 96)."""
    windows, _, channels = fine.shape
    k = m // n
    groups = fine.reshape(windows, n, k, m, channels)  # row groups
    rows = groups[:, :, 0].copy()  # [N, n, m, C]
    for i in range(1, k):
        np.maximum(rows, groups[:, :, i], out=rows)
    columns = rows.reshape(windows, n, n, k, channels)
    target = coarse.reshape(windows, n, n, channels)
    np.copyto(target, columns[:, :, :, 0])
    for j in range(1, k):
        np.maximum(target, columns[:, :, :, j], out=target)


def _bin_edges(start: np.ndarray, end: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Absolute [lo, hi) cell ranges of the n bins of each window along one axis: two [N, n]."""
    i = np.arange(n, dtype=np.int64)[None, :]
    size = (end - start)[:, None]
    lo = (i * size) // n
    hi = -((-(i + 1) * size) // n)  # ceil((i + 1) * size / n) for integers
    return start[:, None] + lo, start[:, None] + hi


class _SparseTable:
    """Block maxima over [H, W, C]: block (a, b) holds, at (y, x), the max over cells
    [y, y + 2^a) x [x, x + 2^b). All blocks sit in one buffer [rows, C], so a
    bin's blocks are row indices; only the sizes bins of at most ``tallest`` x
    ``widest`` cells need are built."""

    def __init__(self, hwc: np.ndarray, tallest: int, widest: int):
        height, width, channels = hwc.shape
        self.a_max, self.b_max = _floor_log2(tallest), _floor_log2(widest)
        shapes = [[(height - (1 << a) + 1, width - (1 << b) + 1) for b in range(self.b_max + 1)]
                  for a in range(self.a_max + 1)]
        sizes = np.array([[h * w for h, w in row] for row in shapes], np.int64)
        self.offset = (np.cumsum(sizes.ravel()) - sizes.ravel()).reshape(sizes.shape)
        self.row_width = np.array([width - (1 << b) + 1 for b in range(self.b_max + 1)], np.int64)
        self.buffer = np.empty((int(sizes.sum()), channels), np.float32)
        blocks = [[self.buffer[self.offset[a, b]:self.offset[a, b] + h * w].reshape(h, w, channels)
                   for b, (h, w) in enumerate(row)] for a, row in enumerate(shapes)]
        for a in range(self.a_max + 1):
            for b in range(self.b_max + 1):
                if a == 0 and b == 0:
                    blocks[0][0][...] = hwc
                elif b == 0:  # 2^a rows: two overlapping blocks of 2^(a-1) rows
                    src, half = blocks[a - 1][0], 1 << (a - 1)
                    np.maximum(src[:-half], src[half:], out=blocks[a][0])
                else:  # 2^b columns from two blocks of 2^(b-1) columns
                    src, half = blocks[a][b - 1], 1 << (b - 1)
                    np.maximum(src[:, :-half], src[:, half:], out=blocks[a][b])

    def corner_rows(self, y_edges: tuple[np.ndarray, np.ndarray],
                    x_edges: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """Buffer rows of the four blocks whose max is each bin's: int64 [4, N, n*n]
        (near-near, far-near, near-far, far-far; they coincide along a side of
        power-of-two length)."""
        (ylo, yhi), (xlo, xhi) = y_edges, x_edges
        n_win, n = ylo.shape
        a = _floor_log2_array(yhi - ylo)  # [N, n]
        b = _floor_log2_array(xhi - xlo)
        y_far = yhi - (1 << a)  # the far block's first row / column
        x_far = xhi - (1 << b)
        width = self.row_width[b]  # [N, n]
        base = self.offset[a[:, :, None], b[:, None, :]]  # [N, n, n]
        rows = np.empty((4, n_win, n, n), np.int64)
        for k, (ys, xs) in enumerate(((ylo, xlo), (y_far, xlo), (ylo, x_far), (y_far, x_far))):
            rows[k] = base + ys[:, :, None] * width[:, None, :] + xs[:, None, :]
        return rows.reshape(4, n_win, n * n)


def _floor_log2(k: int) -> int:
    return int(k).bit_length() - 1


def _floor_log2_array(k: np.ndarray) -> np.ndarray:
    """floor(log2(k)) of positive int64 values, exactly (frexp: k = m * 2^e, 0.5 <= m < 1)."""
    return (np.frexp(k.astype(np.float64))[1] - 1).astype(np.int64)
