"""Tests for detector/features/pyramid.py: scale selection, window mapping, pyramid pooling."""
from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
import torchvision

from detector.features import pyramid_engine as range_max
from detector.features.pyramid import (FeatureGrid, SpatialPyramidPool, map_windows_to_features, select_scales,
                              to_channel_major)


# --- references -----------------------------------------------------------------

def brute_force_pool(fmap: torch.Tensor, cells: torch.Tensor, levels) -> torch.Tensor:
    """Per-window, per-bin loop; output in the module's layout (per level [n, n, C])."""
    rows = []
    for x0, y0, x1, y1 in cells.tolist():
        w, h, parts = x1 - x0, y1 - y0, []
        for n in levels:
            level = torch.empty(n, n, fmap.shape[0])
            for i in range(n):
                ya, yb = y0 + math.floor(i * h / n), y0 + math.ceil((i + 1) * h / n)
                for j in range(n):
                    xa, xb = x0 + math.floor(j * w / n), x0 + math.ceil((j + 1) * w / n)
                    level[i, j] = fmap[:, ya:yb, xa:xb].amax(dim=(1, 2))
            parts.append(level.flatten())
        rows.append(torch.cat(parts))
    return torch.stack(rows) if rows else torch.zeros(0, fmap.shape[0] * sum(n * n for n in levels))


def official_mapping(box, grid, height, width, margin=0.5):
    """ShaoqingRen/SPP_net spm_pool_caffe_mex.cpp, literally, on 1-based pixel
    indices (first pixel X1 + 1, last pixel X2), then to 0-based half-open cells."""
    offset0 = grid.offset + 1  # 1-based pixel of 1-based cell 1's centre
    offset = margin * grid.stride - 0.5  # its margin, from pixel centres
    out = []
    for lo, hi, size in ((box[0], box[2], width), (box[1], box[3], height)):
        left = int(math.floor((lo + 1 - offset0 + offset) / grid.stride + 0.5) + 1)
        right = int(math.ceil((hi - offset0 - offset) / grid.stride - 0.5) + 1)
        if left > right:
            left = right = int((left + right) / 2)  # C integer division truncates
        left, right = min(size, max(1, left)), min(size, max(1, right))
        out.append((left - 1, right))
    (x0, x1), (y0, y1) = out
    return [x0, y0, x1, y1]


def random_windows(gen, n, height, width, stride, min_side=1.0, max_side=200.0):
    xy = torch.rand(n, 2, generator=gen) * torch.tensor([width * stride + 40, height * stride + 40]) - 20
    wh = min_side + torch.rand(n, 2, generator=gen) ** 2 * (max_side - min_side)
    return torch.cat([xy, xy + wh], dim=1)


def random_cells(gen, n, height, width):
    w = torch.randint(1, width + 1, (n,), generator=gen)
    h = torch.randint(1, height + 1, (n,), generator=gen)
    x0 = (torch.rand(n, generator=gen) * (width - w + 1)).floor().long()
    y0 = (torch.rand(n, generator=gen) * (height - h + 1)).floor().long()
    return torch.stack([x0, y0, x0 + w, y0 + h], dim=1)


# --- select_scales ------------------------------------------------------------------

def test_select_scales_hand_examples():
    boxes = torch.tensor([[0, 0, 224, 224], [10, 10, 122, 122], [0, 0, 448, 448],
                          [0, 0, 300, 100]], dtype=torch.float32)
    # 300x100: areas 7500, 30000, 120000 vs 50176 -> factor 1.0 (diff 20176) beats 2.0 (69824).
    assert select_scales(boxes, [0.5, 1.0, 2.0]).tolist() == [1, 2, 0, 1]
    # Same answer when the factors come in another order (indices follow the input).
    assert select_scales(boxes, [2.0, 0.5, 1.0]).tolist() == [2, 0, 1, 2]


def test_select_scales_tie_goes_to_smaller_factor():
    # Area 5, canonical 5: factor 1 -> |5 - 25| = 20; factor 3 -> |45 - 25| = 20.
    box = torch.tensor([[0.0, 0.0, 5.0, 1.0]])
    assert select_scales(box, [1.0, 3.0], canonical=5).tolist() == [0]
    assert select_scales(box, [3.0, 1.0], canonical=5).tolist() == [1]


def test_select_scales_empty_and_errors():
    assert select_scales(torch.zeros(0, 4), [1.0, 2.0]).shape == (0,)
    with pytest.raises(ValueError):
        select_scales(torch.zeros(1, 4), [])
    with pytest.raises(ValueError):
        select_scales(torch.zeros(1, 4), [1.0, 0.0])


# --- map_windows_to_features ---------------------------------------------------------

GRID = FeatureGrid(16)  # cells centred on pixels 16 j (every layer pads floor(k/2))


def test_mapping_hand_examples():
    # Cells j whose centres 16 j + 0.5 lie inside the window.
    boxes = torch.tensor([
        [0, 0, 224, 224],      # centres 0.5 .. 208.5: 14 cells
        [32, 48, 100, 130],    # x: 32.5 .. 96.5 (cells 2..6); y: 48.5 .. 128.5 (3..8)
        [31.5, 0, 64, 64],     # x: 32.5, 48.5 (2, 3); y: 0.5 .. 48.5 (0..3)
        [33, 33, 40, 40],      # no centre inside: first 3 > last 2 -> midpoint 2
        [20, 20, 30, 30],      # first 2 > last 1 -> midpoint 1 (the official rule's pick)
    ], dtype=torch.float32)
    cells = map_windows_to_features(boxes, GRID, 20, 20)
    assert cells.dtype == torch.long
    assert cells.tolist() == [[0, 0, 14, 14], [2, 3, 7, 9], [2, 0, 4, 4], [2, 2, 3, 3],
                              [1, 1, 2, 2]]
    # AlexNet's grid (centres 16 j + 15.5): x 31.5 .. 95.5 (2..5); y 63.5 .. 127.5 (3..7).
    shifted = map_windows_to_features(boxes[1:2], FeatureGrid(16, 15.0), 20, 20)
    assert shifted.tolist() == [[2, 3, 6, 8]]


def test_mapping_borders_and_large_windows():
    # Map 10 rows x 12 columns (a 160 x 192 image at stride 16).
    boxes = torch.tensor([
        [150, 0, 192, 16],       # right border: x centres 160.5, 176.5 -> [10, 12); y [0, 1)
        [-50, -50, 2000, 2000],  # larger than the map: whole map
        [1000, 0, 1100, 50],     # right of the map: last column
        [0, 150, 192, 160],      # bottom sliver, no centre inside: midpoint row 9
    ], dtype=torch.float32)
    cells = map_windows_to_features(boxes, GRID, 10, 12)
    assert cells.tolist() == [[10, 0, 12, 1], [0, 0, 12, 10], [11, 0, 12, 4], [0, 9, 12, 10]]


@pytest.mark.parametrize("grid", [GRID, FeatureGrid(16, 7.5), FeatureGrid(16, 15.0), FeatureGrid(16, 17.0),
                                  FeatureGrid(8, 3.0)])
@pytest.mark.parametrize("margin", [0.5, 0.0, 0.8])
def test_mapping_matches_official_code(grid, margin):
    gen = torch.Generator().manual_seed(1)
    height, width = 9, 13
    boxes = random_windows(gen, 300, height, width, grid.stride)
    boxes[:100] = boxes[:100].round()  # integer edges too
    cells = map_windows_to_features(boxes, grid, height, width, margin)
    expected = [official_mapping(b, grid, height, width, margin) for b in boxes.double().tolist()]
    assert cells.tolist() == expected
    x0, y0, x1, y1 = cells.unbind(1)
    assert bool(((x0 >= 0) & (x1 > x0) & (x1 <= width) & (y0 >= 0) & (y1 > y0) & (y1 <= height)).all())


@pytest.mark.parametrize("grid", [GRID, FeatureGrid(16, 7.5), FeatureGrid(16, 17.0)])
def test_mapping_keeps_the_cells_whose_centres_are_inside(grid):
    gen = torch.Generator().manual_seed(2)
    height, width = 40, 50
    boxes = random_windows(gen, 3000, height, width, grid.stride, min_side=grid.stride + 1, max_side=400)

    def centre(j):
        return grid.stride * j + grid.offset + 0.5

    # Windows with cells on both sides (no clamping at the map's borders).
    inside = ((boxes[:, :2] > centre(0)) & (boxes[:, 2:] < centre(torch.tensor([width, height]) - 1))).all(1)
    boxes = boxes[inside]
    assert len(boxes) > 1000
    cells = map_windows_to_features(boxes, grid, height, width).double()
    for lo, hi, first, end in ((0, 2, 0, 2), (1, 3, 1, 3)):
        first_c, last_c = centre(cells[:, first]), centre(cells[:, end] - 1)
        # Every kept centre is inside the window; the next ones out are not.
        assert bool(((first_c > boxes[:, lo]) & (last_c < boxes[:, hi])).all())
        assert bool(((first_c - grid.stride <= boxes[:, lo]) & (last_c + grid.stride >= boxes[:, hi])).all())
        # So the kept span is centred on the window: within half a stride, no bias.
        error = (first_c + last_c) / 2 - (boxes[:, lo] + boxes[:, hi]) / 2
        assert float(error.abs().max()) < grid.stride / 2
        assert abs(float(error.mean())) < 0.5


def test_mapping_errors_and_empty():
    assert map_windows_to_features(torch.zeros(0, 4), GRID, 4, 4).shape == (0, 4)
    with pytest.raises(ValueError):
        map_windows_to_features(torch.zeros(1, 4), GRID, 0, 4)
    with pytest.raises(ValueError):
        map_windows_to_features(torch.tensor([[0.0, 0.0, float("nan"), 4.0]]), GRID, 4, 4)
    with pytest.raises(ValueError):
        FeatureGrid(0)


# --- SpatialPyramidPool ----------------------------------------------------------------

@pytest.mark.parametrize("levels", [(6, 3, 2, 1), (4, 2, 1), (5, 3, 1), (1,), (3, 6)])
def test_pool_matches_brute_force(levels):
    gen = torch.Generator().manual_seed(sum(levels))
    fmap = torch.randn(5, 11, 17, generator=gen)  # non-square
    cells = torch.cat([
        random_cells(gen, 60, 11, 17),
        torch.tensor([[0, 0, 17, 11],            # full map
                      [16, 10, 17, 11],          # one cell, corner
                      [3, 4, 4, 5],              # one cell
                      [2, 1, 5, 3],              # smaller than 6 cells: repeated cells
                      [0, 0, 17, 1], [7, 0, 8, 11]]),  # 1-cell-thick strips
    ])
    spp = SpatialPyramidPool(levels)
    out = spp(fmap, cells)
    assert out.shape == (len(cells), spp.output_dim(5))
    assert torch.equal(out, brute_force_pool(fmap, cells, levels))


def test_pool_many_windows_crosses_chunks_and_big_map():
    gen = torch.Generator().manual_seed(7)
    fmap = torch.rand(8, 38, 50, generator=gen)
    cells = random_cells(gen, 3 * range_max.CHUNK_WINDOWS + 5, 38, 50)
    out = SpatialPyramidPool()(fmap, cells)
    assert torch.equal(out, brute_force_pool(fmap, cells, (6, 3, 2, 1)))


def test_pool_equals_torchvision_roi_pool_after_reordering():
    gen = torch.Generator().manual_seed(3)
    fmap = torch.randn(4, 9, 14, generator=gen)
    cells = random_cells(gen, 40, 9, 14)
    spp = SpatialPyramidPool((6, 3, 2, 1))
    ours = to_channel_major(spp(fmap, cells), 4, spp.levels)
    # roi_pool's bins are [floor(i*w/n), ceil((i+1)*w/n)) for inclusive boxes of w cells.
    rois = torch.cat([torch.zeros(40, 1), cells[:, :2].float(), (cells[:, 2:] - 1).float()], dim=1)
    theirs = torch.cat([torchvision.ops.roi_pool(fmap[None], rois, (n, n), 1.0).flatten(1)
                        for n in spp.levels], dim=1)
    assert torch.equal(ours, theirs)


def test_pool_layout_and_output_dim():
    # One window over a 2x2 map, level 2: each bin is one cell, bins-major then channel.
    fmap = torch.arange(2 * 2 * 2, dtype=torch.float32).reshape(2, 2, 2)  # [C=2, H=2, W=2]
    spp = SpatialPyramidPool((2, 1))
    out = spp(fmap, torch.tensor([[0, 0, 2, 2]]))
    assert spp.output_dim(2) == 10
    # level 2: bins (0,0),(0,1),(1,0),(1,1) x channels (c0, c1); level 1: max per channel.
    assert out.tolist() == [[0, 4, 1, 5, 2, 6, 3, 7, 3, 7]]


def test_pool_grad_modes_and_dtype():
    fmap = torch.rand(3, 6, 6, requires_grad=True)
    cells = torch.tensor([[0, 0, 6, 6], [1, 2, 3, 5]])
    spp = SpatialPyramidPool()
    plain = spp(fmap, cells)
    with torch.no_grad():
        assert torch.equal(spp(fmap, cells), plain)
    with torch.inference_mode():
        assert torch.equal(spp(fmap, cells), plain)
    wide = spp(fmap.detach().double(), cells)
    assert wide.dtype == torch.float64 and torch.equal(wide.float(), plain)


def test_pool_empty_and_invalid_cells():
    spp = SpatialPyramidPool()
    fmap = torch.rand(3, 4, 5)
    assert spp(fmap, torch.zeros(0, 4, dtype=torch.long)).shape == (0, 150)
    for bad in ([0, 0, 0, 2], [0, 0, 6, 2], [-1, 0, 2, 2], [0, 3, 2, 3]):
        with pytest.raises(ValueError, match="cell range"):
            spp(fmap, torch.tensor([bad]))
    with pytest.raises(ValueError, match="integer"):
        spp(fmap, torch.zeros(1, 4))
    with pytest.raises(ValueError):
        spp(torch.rand(1, 3, 4, 5), torch.tensor([[0, 0, 1, 1]]))
    with pytest.raises(ValueError):
        SpatialPyramidPool((6, 0))


def test_map_then_pool_end_to_end():
    # A window on a 64x96 image (stride 16 -> 4x6 map) pools the cells the mapping names.
    fmap = torch.rand(2, 4, 6)
    cells = map_windows_to_features(torch.tensor([[16.0, 0.0, 80.0, 64.0]]), GRID, 4, 6)
    assert cells.tolist() == [[1, 0, 5, 4]]  # centres 16.5 .. 64.5 and 0.5 .. 48.5
    out = SpatialPyramidPool((1,))(fmap, cells)
    assert torch.equal(out[0], fmap[:, 0:4, 1:5].amax(dim=(1, 2)))


# --- lookup plan: 1, 2 or 4 table lookups per bin ----------------------------------------

def _level6_lookups(cells, height, width):
    """Rows and lookup counts of the level-6 bins of ``cells``, as pooling plans them."""
    y_edges = range_max._bin_edges(cells[:, 1], cells[:, 3] - cells[:, 1], 6)
    x_edges = range_max._bin_edges(cells[:, 0], cells[:, 2] - cells[:, 0], 6)
    tallest = int((y_edges[1] - y_edges[0]).max())
    widest = int((x_edges[1] - x_edges[0]).max())
    table = range_max._SparseTable(torch.rand(height, width, 2), tallest, widest)
    return table.lookup_rows(y_edges, x_edges)


def test_lookup_count_is_number_of_distinct_corner_blocks():
    gen = torch.Generator().manual_seed(11)
    cells = random_cells(gen, 200, 23, 37)
    rows, lookups = _level6_lookups(cells, 23, 37)
    for win in range(len(cells)):
        for b in range(36):
            corners = rows[:, win, b].tolist()
            count = int(lookups[win, b])
            # The first `count` rows are distinct and are all the corner blocks there are.
            assert len(set(corners[:count])) == count
            assert set(corners) == set(corners[:count]) or count == 4
    assert set(lookups.unique().tolist()) == {1, 2, 4}


def test_lookup_counts_by_hand():
    # 12x6 window: bins 2 cells wide (power of two), 1 cell tall -> 1 lookup;
    # 18x9 window: bins 3 wide and 1 or 2 (9/6) tall -> 2 lookups; 18x18: 3x3 -> 4.
    cells = torch.tensor([[0, 0, 12, 6], [0, 0, 18, 9], [0, 0, 18, 18], [5, 5, 6, 6]])
    _, lookups = _level6_lookups(cells, 20, 20)
    assert lookups[0].tolist() == [1] * 36
    assert lookups[1].tolist() == [2] * 36
    assert lookups[2].tolist() == [4] * 36
    assert lookups[3].tolist() == [1] * 36  # one cell repeated in every bin


def test_pool_power_of_two_one_cell_and_mixed_bins():
    gen = torch.Generator().manual_seed(5)
    fmap = torch.randn(6, 40, 52, generator=gen)
    cells = torch.tensor([
        [0, 0, 48, 48 - 8], [2, 1, 26, 25], [3, 3, 15, 15], [4, 2, 10, 8],  # bins 8, 4, 2, 1 wide
        [0, 0, 1, 1], [51, 39, 52, 40], [7, 9, 8, 10],                      # 1-cell windows
        [0, 0, 24, 18], [1, 1, 19, 13], [0, 0, 52, 40], [5, 0, 23, 40],    # mixed per axis
        [10, 10, 13, 11], [0, 30, 52, 33],                                  # thin, repeated cells
    ])
    cells = torch.cat([cells, random_cells(gen, 40, 40, 52)])
    _, lookups = _level6_lookups(cells, 40, 52)
    assert {1, 2, 4} <= set(lookups.unique().tolist())
    for levels in [(6, 3, 2, 1), (4, 2, 1), (6,)]:
        out = SpatialPyramidPool(levels)(fmap, cells)
        assert torch.equal(out, brute_force_pool(fmap, cells, levels))


@pytest.mark.parametrize("chunk", [1, 2, 7, 31, 500])
def test_pool_identical_for_any_chunk_size(chunk):
    gen = torch.Generator().manual_seed(chunk)
    fmap = torch.randn(4, 13, 21, generator=gen)
    cells = random_cells(gen, 45, 13, 21)
    expected = brute_force_pool(fmap, cells, (6, 3, 2, 1))
    out = torch.empty(45, 4 * 50)
    range_max.pool_into(out, fmap, cells, (6, 3, 2, 1), chunk_windows=chunk)
    assert torch.equal(out, expected)


def test_pool_repeated_levels_fill_every_slot():
    gen = torch.Generator().manual_seed(9)
    fmap = torch.randn(3, 10, 12, generator=gen)
    cells = random_cells(gen, 20, 10, 12)
    levels = (6, 3, 6, 1, 3)
    out = SpatialPyramidPool(levels)(fmap, cells)
    assert torch.equal(out, brute_force_pool(fmap, cells, levels))


def test_pool_when_no_bin_needs_more_than_one_lookup():
    # 12x12 and 6x6 windows and one cell: every level-6 bin is 2x2 or 1x1 cells.
    fmap = torch.randn(3, 12, 12, generator=torch.Generator().manual_seed(2))
    cells = torch.tensor([[0, 0, 12, 12], [0, 0, 6, 6], [3, 3, 4, 4]])
    _, lookups = _level6_lookups(cells, 12, 12)
    assert lookups.eq(1).all()
    for levels in [(6, 3, 2, 1), (6,)]:
        out = SpatialPyramidPool(levels)(fmap, cells)
        assert torch.equal(out, brute_force_pool(fmap, cells, levels))


def test_the_sppnet_command_enables_huge_pages_unless_set_and_the_library_does_not():
    def value(module: str, **extra) -> str:
        code = f"import os, {module}; print(os.environ.get('THP_MEM_ALLOC_ENABLE', 'unset'))"
        env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
        run = subprocess.run([sys.executable, "-c", code], env={**env, **extra}, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        return run.stdout.strip()

    assert value("detector.commands") == "1"
    assert value("detector.commands", THP_MEM_ALLOC_ENABLE="0") == "0"  # the user's value wins
    assert value("detector") == "unset" and value("detector.features.pyramid") == "unset"


def test_pyramid_with_gradient_matches_the_exact_engine_and_brute_force_gradients():
    gen = torch.Generator().manual_seed(7)
    fmap = torch.randn(5, 11, 13, generator=gen, dtype=torch.float64)
    cells = torch.tensor([[0, 0, 13, 11], [2, 3, 5, 4], [4, 1, 12, 10], [7, 7, 8, 8]])
    levels = (6, 3, 2, 1)
    pool = SpatialPyramidPool(levels)
    fast = pool(fmap, cells)
    leaf = fmap.clone().requires_grad_(True)
    with_grad = pool(leaf, cells)
    assert with_grad.requires_grad
    torch.testing.assert_close(with_grad.detach(), fast)  # the same bins and maxima
    weights = torch.randn(with_grad.shape, generator=gen, dtype=torch.float64)
    (with_grad * weights).sum().backward()
    reference = fmap.clone().requires_grad_(True)
    (brute_force_pool(reference, cells, levels) * weights).sum().backward()
    # random values: no ties, one max per bin (the reference pools into float32: its tolerance)
    torch.testing.assert_close(leaf.grad, reference.grad, rtol=1e-5, atol=1e-6)
    assert torch.autograd.gradcheck(lambda m: pool(m, cells[1:3]), (fmap.clone().requires_grad_(True),))
