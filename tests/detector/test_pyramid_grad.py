"""detector/features/pyramid_grad.py: the window pyramid with a one-scatter backward gives the exact
engine's values and the per-window autograd route's gradient."""
import pytest
import torch

from detector.features.pyramid import SpatialPyramidPool
from detector.features.pyramid_grad import pyramid_argmax, pyramid_argmax_loop
from detector.features.spp import SpatialPyramidPool2d


def autograd_route(fmap, cells, levels):
    """The route before pyramid_grad: slices and maxima per window and bin through autograd."""
    layer = SpatialPyramidPool2d(levels, rule="exact")
    return torch.stack([torch.cat([p[0].permute(1, 2, 0).reshape(-1)
                                   for p in layer.pool_levels(fmap[None, :, y0:y1, x0:x1])])
                        for x0, y0, x1, y1 in cells.tolist()])


def random_cells(gen, n, height, width):
    x0 = torch.randint(0, width, (n,), generator=gen)
    y0 = torch.randint(0, height, (n,), generator=gen)
    x1 = x0 + 1 + (torch.rand(n, generator=gen) * (width - x0)).long().clamp(max=width - x0 - 1)
    y1 = y0 + 1 + (torch.rand(n, generator=gen) * (height - y0)).long().clamp(max=height - y0 - 1)
    return torch.stack([x0, y0, x1, y1], 1)


def test_values_are_the_engines_and_gradients_autograds():
    gen = torch.Generator().manual_seed(3)
    fmap = torch.randn(8, 21, 26, generator=gen)
    cells = random_cells(gen, 40, 21, 26)
    pool = SpatialPyramidPool((6, 3, 2, 1))
    leaf, ref = fmap.clone().requires_grad_(True), fmap.clone().requires_grad_(True)
    pooled = pool(leaf, cells)
    assert torch.equal(pooled.detach(), pool(fmap, cells))  # the exact engine's maxima
    weights = torch.randn(pooled.shape, generator=gen)
    (pooled * weights).sum().backward()
    (autograd_route(ref, cells, (6, 3, 2, 1)) * weights).sum().backward()
    torch.testing.assert_close(leaf.grad, ref.grad)  # random values: one maximum per bin


def test_a_tied_bin_gives_its_whole_gradient_to_one_cell():
    fmap = torch.ones(2, 4, 5, requires_grad=True)
    cells = torch.tensor([[0, 0, 5, 4], [1, 1, 3, 3]])
    pooled = SpatialPyramidPool((2, 1))(fmap, cells)
    pooled.sum().backward()
    assert fmap.grad.sum() == pooled.numel()  # nothing lost or doubled
    assert fmap.grad[0, 0, 0] > 0 and fmap.grad[0, 3, 4] == 0  # the first cell of a tied bin takes it


@pytest.mark.parametrize("levels", [(1, 2, 3, 6), (6, 3, 2, 1), (1,), (2, 4), (1, 3, 5), (4, 4, 1)])
@pytest.mark.parametrize("kind", ["random", "ties"])
def test_the_vectorised_pyramid_finds_the_loops_values_and_places(levels, kind):
    """Every value and every place (the cell the gradient goes to) equal the loop's, also where
    bins tie: a map of few distinct values, clipped like a ReLU6's output."""
    gen = torch.Generator().manual_seed(len(levels) * 7 + (kind == "ties"))
    fmap = torch.randn(5, 17, 23, generator=gen)
    if kind == "ties":
        fmap = (fmap * 2).round().clamp(0, 2)
    cells = torch.cat([random_cells(gen, 60, 17, 23),
                       torch.tensor([[0, 0, 23, 17], [4, 5, 5, 6], [0, 0, 1, 17], [22, 0, 23, 1], [3, 2, 9, 4]])])
    values, places = pyramid_argmax(fmap, cells, levels)
    ref_values, ref_places = pyramid_argmax_loop(fmap, cells, levels)
    assert torch.equal(values, ref_values)
    assert torch.equal(places, ref_places)
    assert torch.equal(fmap.reshape(-1)[places], values)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_signed_zeros_infinities_nan_and_bfloat16_follow_the_loop(dtype):
    """-0.0 ties with 0.0 (the first of the tied takes the place, and its value keeps its sign, as
    max() has it), infinities order like numbers, a NaN (either sign) outranks them all as max()
    carries it, and a bfloat16 map (ordered through float32) gives the loop's values and places."""
    gen = torch.Generator().manual_seed(11)
    fmap = torch.randn(4, 13, 15, generator=gen).round().clamp(-1, 1)
    fmap[fmap == 0] = torch.where(torch.rand(int((fmap == 0).sum()), generator=gen) < 0.5, -0.0, 0.0)
    fmap[0, 3, 4], fmap[1, 7, 2], fmap[2, :, :] = float("inf"), float("-inf"), -0.0
    fmap[3, 5, 6], fmap[3, 9, 11] = float("nan"), -float("nan")
    fmap = fmap.to(dtype)
    cells = torch.cat([random_cells(gen, 40, 13, 15), torch.tensor([[0, 0, 15, 13]])])
    values, places = pyramid_argmax(fmap, cells, (6, 3, 2, 1))
    ref_values, ref_places = pyramid_argmax_loop(fmap, cells, (6, 3, 2, 1))
    assert values.dtype == dtype
    assert torch.equal(places, ref_places)
    assert torch.equal(values.isnan(), ref_values.isnan()) and values.isnan().any()
    assert torch.equal(values.nan_to_num(), ref_values.nan_to_num())
    assert torch.equal(values.signbit(), ref_values.signbit())  # -0.0 stays -0.0


def test_a_float64_map_keeps_its_dtype_and_no_window_gives_empty_rows():
    fmap = torch.randn(3, 6, 7, dtype=torch.float64)
    values, places = pyramid_argmax(fmap, torch.tensor([[0, 0, 7, 6]]), (2, 1))
    assert values.dtype == torch.float64 and torch.equal(fmap.reshape(-1)[places], values)
    values, places = pyramid_argmax(fmap.float(), torch.zeros((0, 4), dtype=torch.long), (2, 1))
    assert values.shape == places.shape == (0, 15)


def test_many_windows_are_pooled_in_chunks_with_the_same_result(monkeypatch):
    from detector.features import pyramid_grad

    gen = torch.Generator().manual_seed(5)
    fmap = torch.randn(3, 17, 23, generator=gen)
    cells = random_cells(gen, 50, 17, 23)
    whole = pyramid_argmax(fmap, cells, (6, 3, 2, 1))
    monkeypatch.setattr(pyramid_grad, "_CHUNK", 7)
    chunked = pyramid_argmax(fmap, cells, (6, 3, 2, 1))
    assert torch.equal(whole[0], chunked[0]) and torch.equal(whole[1], chunked[1])
