"""The engine behind :class:`detector.features.pyramid.SpatialPyramidPool`: exact max over many bins.

A 2-D sparse table (range-maximum query) over a channels-last conv map
answers every bin with at most four overlapping power-of-two blocks (one or
two when a side is a power of two); levels that divide a finer level are
reduced from that level's bins. Internal: ``SpatialPyramidPool`` is the API.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .pyramid_plan import level_places, plan_levels
from .spp import bin_edges

# Windows pooled per chunk. Larger chunks mean fewer, larger ops (~15 per
# chunk); smaller ones keep the chunk's scratch and output rows (50 KB a
# window at C = 256) nearer the core. Measured on the benchmark (1 thread,
# loaded machine, median of 9 alternating runs): 24 -> 52 ms, 32 -> 49 ms,
# 48 -> 48 ms, 64 -> 56 ms, 80 -> 63 ms. Results are identical for any value.
CHUNK_WINDOWS = 48


def pool_into(out: Tensor, feature_map: Tensor, cells: Tensor, levels: tuple[int, ...],
               chunk_windows: int | None = None) -> None:
    """Fill ``out`` [N, C * sum(n*n)] with the pyramid of every window.

    A bin of the directly pooled levels needs 1, 2 or 4 table lookups
    (:meth:`_SparseTable.lookup_rows`); in the benchmark's windows 54% of
    level-6 bins need 1, 39% 2 and 7% 4, i.e. 2.5x fewer rows than 4 each.
    Per chunk of windows: gather the first two lookups of the chunk's 2- and
    4-lookup bins and take their max into spare rows at the end of the
    table's buffer, then fold in the 4-lookup bins' other two (a contiguous
    tail, see :class:`_LookupPlan`); then one gather from that buffer writes
    the chunk's output rows in order, sequentially: a 1-lookup bin straight
    from its block, the others from their spare rows. Last, the derived
    levels are reduced in place from the finer level's bins.
    ``chunk_windows`` overrides :data:`CHUNK_WINDOWS` (any value gives the
    same result).

    All scratch is allocated once, before the chunk loop: a fresh
    megabyte-sized temporary per chunk costs a page-fault storm (the CPU
    allocator returns large blocks to the OS), which measured slower than
    the arithmetic itself.
    """
    channels = feature_map.shape[0]
    n_win = cells.shape[0]
    chunk = min(chunk_windows or CHUNK_WINDOWS, n_win)
    direct, derived = plan_levels(levels)
    edges = {n: (_bin_edges(cells[:, 1], cells[:, 3] - cells[:, 1], n),
                 _bin_edges(cells[:, 0], cells[:, 2] - cells[:, 0], n)) for n in direct}
    tallest = max(int((yhi - ylo).max()) for (ylo, yhi), _ in edges.values())
    widest = max(int((xhi - xlo).max()) for _, (xlo, xhi) in edges.values())
    spare = chunk * sum(n * n for n in direct)  # room for a chunk's multi-lookup bins
    table = _SparseTable(feature_map.permute(1, 2, 0), tallest, widest, spare)
    plan = _plan_lookups(table, edges, levels, chunk)
    bins = sum(n * n for n in levels)
    # out viewed as one row per bin: window w's bin b (all levels, in the
    # output's order) is row w * bins + b, a contiguous C-vector.
    out_rows = out.view(n_win * bins, channels)
    source = plan.source.view(-1)
    best = table.spare  # a chunk's multi-lookup bins, in the table's buffer
    blocks = table.buffer[:table.spare_row]  # gathers must not overlap their output
    extra = feature_map.new_empty((2 * spare, channels))
    folded = {n: feature_map.new_empty((chunk * n * n * (m // n), channels)) for n, m in derived.items()}
    places = level_places(levels)
    for index, lo in enumerate(range(0, n_win, chunk)):
        hi = min(lo + chunk, n_win)
        s, e = plan.bounds[index], plan.bounds[index + 1]
        if e > s:  # first and second lookups of the multi-lookup bins
            got = torch.index_select(blocks, 0, plan.rows[0, s:e], out=best[:e - s])
            more = torch.index_select(blocks, 0, plan.rows[1, s:e], out=extra[:e - s])
            torch.maximum(got, more, out=got)
        m4 = plan.fours[index]
        if m4:  # third and fourth lookups of the 4-lookup bins (the tail)
            third, fourth = extra[:m4], extra[m4:2 * m4]
            torch.index_select(blocks, 0, plan.rows[2, e - m4:e], out=third)
            torch.index_select(blocks, 0, plan.rows[3, e - m4:e], out=fourth)
            torch.maximum(third, fourth, out=third)
            torch.maximum(got[-m4:], third, out=got[-m4:])
        # Output rows in order, from the table (1-lookup bins) or the spare
        # rows (the others); derived levels' rows get a placeholder,
        # overwritten below. One sequential write of the chunk's rows.
        torch.index_select(table.buffer, 0, source[lo * bins:hi * bins],
                           out=out_rows[lo * bins:hi * bins])
        if derived:
            _derive_levels(out[lo:hi].view(hi - lo, bins, channels), places, derived, folded)


def _derive_levels(chunk_bins: Tensor, places: dict[int, list[int]], derived: dict[int, int],
                   folded: dict[int, Tensor]) -> None:
    """Reduce the derived levels of a chunk's output rows [K, bins, C] in
    place from their finer levels (finest first), then fill repeated levels."""
    k, _, channels = chunk_bins.shape
    slot = {n: chunk_bins[:, at[0]:at[0] + n * n].view(k, n, n, channels) for n, at in places.items()}
    todo = dict(derived)
    if todo.get(3) == 6 and todo.get(2) == 6:  # the paper's pyramid
        pairs = folded[3][:k * 18].view(k, 3, 6, channels)
        triples = folded[2][:k * 12].view(k, 2, 6, channels)
        _reduce_six(slot[6], slot[3], slot[2], pairs, triples)
        del todo[3], todo[2]
    for n, m in todo.items():
        scratch = folded[n][:k * n * n * (m // n)].view(k, n, n, m // n, channels)
        _reduce_bins(slot[m], slot[n], scratch)
    for n, at in places.items():
        if n in derived:
            for start in at[1:]:
                chunk_bins[:, start:start + n * n].copy_(slot[n].view(k, n * n, channels))


def _reduce_six(six: Tensor, three: Tensor, two: Tensor, pairs: Tensor, triples: Tensor) -> None:
    """Levels 3 and 2 from level 6 [K, 6, 6, C], sharing the row work: the
    maxima of row pairs {0,1}, {2,3}, {4,5} (``pairs`` [K, 3, 6, C]) give
    level 3's rows and, with rows 2 and 3, level 2's {0,1,2} and {3,4,5}
    (``triples`` [K, 2, 6, C]). ~20% less memory traffic than two separate
    :func:`_reduce_bins`, which this equals exactly (max is exact)."""
    k, _, _, channels = six.shape
    grouped = six.view(k, 3, 2, 6, channels)
    torch.maximum(grouped[:, :, 0], grouped[:, :, 1], out=pairs)
    columns = pairs.view(k, 3, 3, 2, channels)
    torch.maximum(columns[:, :, :, 0], columns[:, :, :, 1], out=three)
    torch.maximum(pairs[:, 0::2], six[:, 2:4], out=triples)  # {0,1}+2, {4,5}+3
    columns = triples.view(k, 2, 2, 3, channels)
    torch.maximum(columns[:, :, :, 0], columns[:, :, :, 1], out=two)
    torch.maximum(two, columns[:, :, :, 2], out=two)


class _LookupPlan(NamedTuple):
    """Table lookups for :func:`pool_into`.

    The bins that need 2 or 4 lookups ("multi-lookup bins") sorted by chunk,
    then with the 4-lookup bins last, so that each chunk's are a contiguous
    run and its 4-lookup bins that run's tail:

    rows: LongTensor [4, M] table rows per sorted multi-lookup bin (the 4th
        and 3rd only meaningful for 4-lookup bins, see
        :meth:`_SparseTable.lookup_rows`);
    bounds: chunk c's are [bounds[c], bounds[c + 1]);
    fours: per chunk, how many of them need 4 lookups;
    source: LongTensor [N, bins]: for each output row (window, bin), the
        table buffer row holding its max: the block itself for a 1-lookup
        bin, a spare row (the bin's place in its chunk's run) for the
        others, and 0 for the rows of derived levels (computed afterwards).
    """

    rows: Tensor
    bounds: list[int]
    fours: list[int]
    source: Tensor


def _plan_lookups(table: "_SparseTable", edges: dict, levels: tuple[int, ...],
                  chunk: int) -> _LookupPlan:
    """Plan the directly pooled levels' lookups (see :class:`_LookupPlan`).

    edges: per direct level n, ((ylo, yhi), (xlo, xhi)), each [N, n].
    """
    looked_up = [table.lookup_rows(*edges[n]) for n in edges]  # ([4, N, n*n], [N, n*n])
    if len(looked_up) == 1:
        rows, lookups = looked_up[0]
    else:
        rows = torch.cat([r for r, _ in looked_up], dim=2)
        lookups = torch.cat([c for _, c in looked_up], dim=1)
    rows = rows.reshape(4, -1)  # [4, N*D]
    n_win, per_window = lookups.shape
    n_chunks = -(-n_win // chunk)
    flat = lookups.view(-1)
    multi = torch.nonzero(flat > 1).view(-1)
    chunk_of = torch.div(multi, per_window * chunk, rounding_mode="floor")
    # Key 2c for chunk c's 2-lookup bins, 2c + 1 for its 4-lookup bins; the
    # order within a key does not matter.
    key = chunk_of * 2 + (torch.index_select(flat, 0, multi) == 4).long()
    key, order = torch.sort(key)
    # (1-D index_select and searchsorted: several times faster than advanced
    # indexing and bincount here.)
    first = torch.searchsorted(key, torch.arange(2 * n_chunks + 1))  # each key's first place
    bounds = first[0::2]
    sorted_bins = torch.index_select(multi, 0, order)
    source_bins = rows[0].clone()  # 1-lookup bins: the block row itself
    source_bins[sorted_bins] = (table.spare_row + torch.arange(multi.numel())
                                - torch.index_select(bounds, 0, torch.div(key, 2, rounding_mode="floor")))
    source_bins = source_bins.view(n_win, per_window)
    source = torch.zeros(n_win, sum(n * n for n in levels), dtype=torch.long)
    places, done = level_places(levels), 0
    for n in edges:
        for start in places[n]:
            source[:, start:start + n * n] = source_bins[:, done:done + n * n]
        done += n * n
    return _LookupPlan(torch.index_select(rows, 1, sorted_bins), bounds.tolist(),
                       (first[2::2] - first[1::2]).tolist(), source)


def _reduce_bins(fine: Tensor, coarse: Tensor, scratch: Tensor) -> None:
    """Max over k x k groups of bins: fine [K, m, m, C] -> coarse [K, n, n, C],
    m = k*n, through ``scratch`` [K, n, n, k, C] (the row-group maxima)."""
    windows, m, _, channels = fine.shape
    n = coarse.shape[1]
    k = m // n
    grouped = fine.view(windows, n, k, n, k, channels)  # a view: no copy
    torch.maximum(grouped[:, :, 0], grouped[:, :, 1], out=scratch)
    for r in range(2, k):
        torch.maximum(scratch, grouped[:, :, r], out=scratch)
    torch.maximum(scratch[:, :, :, 0], scratch[:, :, :, 1], out=coarse)
    for c in range(2, k):
        torch.maximum(coarse, scratch[:, :, :, c], out=coarse)


def _bin_edges(start: Tensor, size: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Bin ranges [lo, hi) per window along one axis: [N] -> two [N, n] (the exact rule)."""
    lo, hi = bin_edges(size, n, "exact")
    return start[:, None] + lo, start[:, None] + hi


class _SparseTable:
    """2-D range-maximum table over a channels-last map [H, W, C].

    Block (a, b) holds, for every top-left cell (y, x), the max over cells
    [y, y + 2^a) x [x, x + 2^b): an array [H - 2^a + 1, W - 2^b + 1, C]. All
    blocks live in one flat buffer [rows, C], so a query is a row gather of
    one contiguous C-vector. A bin of h x w cells is the max of the blocks
    of 2^floor(log2 h) x 2^floor(log2 w) cells anchored at its corners (they
    overlap and cover it exactly). Only the block sizes that bins of at most
    ``tallest`` x ``widest`` cells need are built.
    """

    def __init__(self, hwc: Tensor, tallest: int, widest: int, spare_rows: int = 0):
        height, width, channels = hwc.shape
        a_max, b_max = _floor_log2(tallest), _floor_log2(widest)
        # floor(log2(k)) for k = 0 .. max(H, W) (index 0 unused).
        self.log2 = torch.tensor([0] + [_floor_log2(k) for k in range(1, max(height, width) + 1)])
        self.row_width = torch.tensor([width - (1 << b) + 1 for b in range(b_max + 1)])
        shapes = [[(height - (1 << a) + 1, width - (1 << b) + 1) for b in range(b_max + 1)]
                  for a in range(a_max + 1)]
        sizes = torch.tensor([[h * w for h, w in row] for row in shapes])
        # First buffer row of block (a, b), flattened as a * (b_max + 1) + b.
        self.offset = sizes.flatten().cumsum(0) - sizes.flatten()
        self.columns = b_max + 1
        # spare_rows more rows at the end (``spare``), for results that one
        # gather should read together with table rows.
        self.spare_row = int(sizes.sum())
        self.buffer = hwc.new_empty((self.spare_row + spare_rows, channels))
        self.spare = self.buffer[self.spare_row:]
        blocks = [[self.buffer[int(self.offset[a * self.columns + b]):][:h * w].view(h, w, channels)
                   for b, (h, w) in enumerate(row)] for a, row in enumerate(shapes)]
        for a in range(a_max + 1):
            for b in range(b_max + 1):
                if a == 0 and b == 0:
                    blocks[0][0].copy_(hwc)
                elif b == 0:  # 2^a rows = two overlapping blocks of 2^(a-1) rows
                    src, half = blocks[a - 1][0], 1 << (a - 1)
                    torch.maximum(src[:-half], src[half:], out=blocks[a][0])
                else:  # 2^b columns from two blocks of 2^(b-1) columns
                    src, half = blocks[a][b - 1], 1 << (b - 1)
                    torch.maximum(src[:, :-half], src[:, half:], out=blocks[a][b])

    def lookup_rows(self, y_edges: tuple[Tensor, Tensor],
                    x_edges: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """Buffer rows of the blocks whose max is each bin, distinct ones first.

        Along an axis a bin of h cells needs the blocks of 2^floor(log2 h)
        cells at its near and far end: one block when h is a power of two
        (they coincide). So a bin needs 1, 2 or 4 lookups, in this order:
        near-near; the other corner along the axis that needs two (far-near
        if the height does, else near-far); near-far; far-far. Slots past a
        bin's count hold valid but redundant rows.

        Args:
            y_edges, x_edges: (lo, hi) bin ranges per window, each [N, n].
        Returns:
            rows: LongTensor [4, N, n*n] (bins row-major);
            lookups: LongTensor [N, n*n], 1, 2 or 4.
        """
        (ylo, yhi), (xlo, xhi) = y_edges, x_edges
        n_win, n = ylo.shape
        a = self.log2[yhi - ylo]  # [N, n]
        b = self.log2[xhi - xlo]
        y_step = yhi - (1 << a) - ylo  # far block's first row - near block's
        x_step = xhi - (1 << b) - xlo
        width = self.row_width[b]  # [N, n]: rows of block column b
        base = torch.take(self.offset, (a * self.columns)[:, :, None] + b[:, None, :])  # [N, n, n]
        rows = torch.empty(4, n_win, n, n, dtype=torch.long)
        near_near, second, near_far, far_far = rows.unbind(0)
        torch.add(base, ylo[:, :, None] * width[:, None, :] + xlo[:, None, :], out=near_near)
        far_near = near_near + y_step[:, :, None] * width[:, None, :]
        torch.add(near_near, x_step[:, None, :], out=near_far)
        torch.add(far_near, x_step[:, None, :], out=far_far)
        y_two, x_two = (y_step > 0)[:, :, None], (x_step > 0)[:, None, :]
        torch.where(y_two, far_near, near_far, out=second)
        lookups = (1 + y_two.long()) * (1 + x_two.long())
        return rows.view(4, n_win, n * n), lookups.view(n_win, n * n)


def _floor_log2(k: int) -> int:
    """floor(log2(k)) for an integer k >= 1."""
    return int(k).bit_length() - 1
