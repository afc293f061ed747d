"""detector/features/pyramid_grad.py: the window pyramid with a one-scatter backward gives the exact
engine's values and the per-window autograd route's gradient."""
import torch

from detector.features.pyramid import SpatialPyramidPool
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
