"""detector/deploy/pyramid.py (numpy, the runtime's pool5) against detector.features.pyramid.SpatialPyramidPool."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from detector.deploy.pyramid import pool_pyramid
from detector.features.mapping import FeatureGrid, map_windows_to_cells
from detector.features.pyramid import SpatialPyramidPool
from helpers import random_boxes


def random_cells(rng: np.random.Generator, n: int, height: int, width: int) -> np.ndarray:
    """Cell ranges of every size from 1 x 1 to the whole map."""
    x0 = rng.integers(0, width, n)
    y0 = rng.integers(0, height, n)
    x1 = x0 + 1 + (rng.integers(0, width, n) % (width - x0))
    y1 = y0 + 1 + (rng.integers(0, height, n) % (height - y0))
    cells = np.stack([x0, y0, x1, y1], 1)
    cells[0] = [0, 0, width, height]
    return cells.astype(np.int64)


@pytest.mark.parametrize("levels", [(6, 3, 2, 1), (4, 2, 1), (5, 3, 1), (1,), (3, 3), (2, 6)])
@pytest.mark.parametrize("seed", range(3))
def test_pool_pyramid_equals_torch(levels, seed):
    rng = np.random.default_rng(seed)
    height, width = int(rng.integers(1, 40)), int(rng.integers(1, 50))
    fmap = rng.normal(size=(7, height, width)).astype(np.float32)
    cells = random_cells(rng, 300, height, width)
    want = SpatialPyramidPool(levels)(torch.from_numpy(fmap), torch.from_numpy(cells)).numpy()
    np.testing.assert_array_equal(pool_pyramid(fmap, cells, levels), want)


def test_pool_pyramid_of_mapped_windows_and_no_windows():
    rng = np.random.default_rng(5)
    fmap = rng.normal(size=(16, 30, 41)).astype(np.float32)
    cells = map_windows_to_cells(random_boxes(rng, 500, extent=600.0, max_side=300.0), FeatureGrid(16, 7.5), 30, 41)
    want = SpatialPyramidPool((6, 3, 2, 1))(torch.from_numpy(fmap), torch.from_numpy(cells)).numpy()
    np.testing.assert_array_equal(pool_pyramid(fmap, cells, (6, 3, 2, 1)), want)
    assert pool_pyramid(fmap, np.zeros((0, 4), np.int64), (6, 3, 2, 1)).shape == (0, 16 * 50)
