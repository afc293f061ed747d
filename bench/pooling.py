"""Spatial pyramid pooling on the CPU: ours against torchvision.ops.roi_pool.

Same work for both: a random 256 x 38 x 50 conv5 map (a ~600 x 800 image at
stride 16), 2000 random windows with a realistic size spread, the paper's
four levels (6, 3, 2, 1). roi_pool gets the cell ranges as boxes
(x0, y0, x1 - 1, y1 - 1) with spatial_scale 1: its bin rule
[floor(i*w/n), ceil((i+1)*w/n)) is then exactly ours, so both produce the
same numbers (checked below, and against the brute-force loop on a subset),
ours per level [n, n, C], roi_pool's [C, n, n] (reordered, untimed, for the
check; the order is a convention the fc layers do not care about).

Run: OMP_NUM_THREADS=1 .venv/bin/python -m bench.pooling [--runs 7]
     [--windows 2000] [--chunk 48]
(THP_MEM_ALLOC_ENABLE=0 in front measures without transparent huge pages,
which importing detector otherwise turns on; see detector/__init__.py.)
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import time

from detector.features import pyramid_engine as range_max  # bench/__init__.py set THP_MEM_ALLOC_ENABLE before torch loads
from detector.features.pyramid import SpatialPyramidPool, to_channel_major

import torch  # noqa: E402
import torchvision  # noqa: E402

CHANNELS, HEIGHT, WIDTH = 256, 38, 50


def make_cells(n_windows: int, height: int, width: int, gen: torch.Generator) -> torch.Tensor:
    """Random cell ranges whose sides are log-uniform from 1 cell to the whole
    map, like selective-search windows (many small, some image-sized)."""
    def side(limit: int) -> torch.Tensor:
        u = torch.rand(n_windows, generator=gen)
        return torch.exp(u * math.log(limit)).floor().long().clamp(1, limit)

    w, h = side(width), side(height)
    x0 = (torch.rand(n_windows, generator=gen) * (width - w + 1)).floor().long()
    y0 = (torch.rand(n_windows, generator=gen) * (height - h + 1)).floor().long()
    return torch.stack([x0, y0, x0 + w, y0 + h], dim=1)


def pool_with_roi_pool(fmap: torch.Tensor, cells: torch.Tensor, levels) -> torch.Tensor:
    """torchvision's roi_pool, one call per level, same layout as ours."""
    rois = torch.cat([torch.zeros(len(cells), 1), cells[:, :2].float(),
                      (cells[:, 2:] - 1).float()], dim=1)
    outs = [torchvision.ops.roi_pool(fmap[None], rois, (n, n), 1.0).flatten(1) for n in levels]
    return torch.cat(outs, dim=1)


def brute_force(fmap: torch.Tensor, cells: torch.Tensor, levels) -> torch.Tensor:
    """Per-window, per-bin Python loop (same as the tests' reference)."""
    rows = []
    for x0, y0, x1, y1 in cells.tolist():
        w, h, parts = x1 - x0, y1 - y0, []
        for n in levels:
            level = torch.empty(fmap.shape[0], n, n)
            for i in range(n):
                ya, yb = y0 + (i * h) // n, y0 + -(-(i + 1) * h // n)
                for j in range(n):
                    xa, xb = x0 + (j * w) // n, x0 + -(-(j + 1) * w // n)
                    level[:, i, j] = fmap[:, ya:yb, xa:xb].amax(dim=(1, 2))
            parts.append(level.flatten())
        rows.append(torch.cat(parts))
    return torch.stack(rows)


def median_times(fns, runs: int) -> list[float]:
    """Median wall time of each function, run alternately (one run of each
    per round) so that both see the same background load."""
    times = [[] for _ in fns]
    for _ in range(runs):
        for fn, spent in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - t0)
    return [statistics.median(spent) for spent in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--windows", type=int, default=2000)
    parser.add_argument("--chunk", type=int, default=range_max.CHUNK_WINDOWS,
                        help="windows pooled per chunk (range_max.CHUNK_WINDOWS)")
    args = parser.parse_args()
    range_max.CHUNK_WINDOWS = args.chunk

    gen = torch.Generator().manual_seed(0)
    fmap = torch.rand(CHANNELS, HEIGHT, WIDTH, generator=gen)
    cells = make_cells(args.windows, HEIGHT, WIDTH, gen)
    spp = SpatialPyramidPool((6, 3, 2, 1))

    with torch.inference_mode():
        # Our layout is per level [n, n, C]; roi_pool's [C, n, n]. Same values.
        ours = to_channel_major(spp(fmap, cells), CHANNELS, spp.levels)
        theirs = pool_with_roi_pool(fmap, cells, spp.levels)
        assert torch.equal(ours, theirs), "ours and roi_pool disagree"
        assert torch.equal(ours[:50], brute_force(fmap, cells[:50], spp.levels)), "brute force disagrees"
        spp(fmap, cells)  # warm-up
        t_ours, t_roi = median_times([lambda: spp(fmap, cells),
                                      lambda: pool_with_roi_pool(fmap, cells, spp.levels)], args.runs)

    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"threads {torch.get_num_threads()}, chunk {args.chunk}, "
          f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE')}")
    print(f"map {CHANNELS}x{HEIGHT}x{WIDTH}, {args.windows} windows, levels {spp.levels}, "
          f"median of {args.runs} alternating runs; outputs identical (and = brute force on 50 windows)")
    print(f"roi_pool : {t_roi * 1000:8.1f} ms")
    print(f"ours     : {t_ours * 1000:8.1f} ms")
    print(f"speed-up : {t_roi / t_ours:8.1f}x")


if __name__ == "__main__":
    main()
