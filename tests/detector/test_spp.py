"""detector/features/spp.py: the reusable pyramid layer against a brute-force reference, both bin rules."""
from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from detector.features.spp import SpatialPyramidPool2d, bin_edges, min_map_size

from helpers import REPO, sppnet_env


def reference_bins(a: int, n: int, rule: str) -> list[tuple[int, int]]:
    """The rules as the paper and the docstring state them, one bin at a time in plain Python."""
    if rule == "exact":
        return [(math.floor(i * a / n), math.ceil((i + 1) * a / n)) for i in range(n)]
    window, stride = math.ceil(a / n), math.floor(a / n)
    return [(i * stride, i * stride + window) for i in range(n)]


def brute_pool(x: torch.Tensor, levels, rule: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled vectors [N, C*sum(n^2)] and, per output, the flat index of its maximum in x's map,
    by visiting every cell of every bin."""
    num, channels, height, width = x.shape
    values, where = [], []
    for b in range(num):
        vals, idx = [], []
        for n in levels:
            ybins, xbins = reference_bins(height, n, rule), reference_bins(width, n, rule)
            for c in range(channels):
                for y0, y1 in ybins:
                    for x0, x1 in xbins:
                        cells = [(x[b, c, y, xx].item(), y * width + xx) for y in range(y0, y1) for xx in range(x0, x1)]
                        best = max(cells)
                        vals.append(best[0])
                        idx.append(best[1])
        values.append(vals)
        where.append(idx)
    return torch.tensor(values, dtype=x.dtype), torch.tensor(where)


@pytest.mark.parametrize("rule", ["exact", "paper"])
@pytest.mark.parametrize("levels", [(6, 3, 2, 1), (4, 2, 1), (3,)])
def test_forward_and_gradient_match_brute_force_down_to_the_smallest_map(rule, levels):
    gen = torch.Generator().manual_seed(7)
    layer = SpatialPyramidPool2d(levels, rule=rule)
    smallest = min_map_size(levels, rule)
    for height, width in [(smallest, smallest), (smallest, smallest + 1), (smallest + 2, 13), (13, 10), (9, 7)]:
        x = torch.randn(2, 3, height, width, generator=gen, dtype=torch.float64, requires_grad=True)
        out = layer(x)
        expected, argmax = brute_pool(x.detach(), levels, rule)
        assert out.shape == (2, layer.output_dim(3))
        torch.testing.assert_close(out.detach(), expected, rtol=0, atol=0)
        # Gradient: each output's weight lands on its bin's maximum (random floats: no ties).
        weights = torch.randn(out.shape, generator=gen, dtype=torch.float64)
        (out * weights).sum().backward()
        grad = torch.zeros(2, 3 * height * width, dtype=torch.float64)
        per_level_channel = [(n, c) for n in levels for c in range(3) for _ in range(n * n)]
        for b in range(2):
            for k, (_, c) in enumerate(per_level_channel):
                grad[b, c * height * width + argmax[b, k]] += weights[b, k]
        torch.testing.assert_close(x.grad.reshape(2, -1), grad)


def test_gradcheck_paper_rule():
    x = torch.randn(1, 2, 7, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(SpatialPyramidPool2d((3, 2, 1), rule="paper"), (x,))


@pytest.mark.parametrize("rule, side", [("exact", 0), ("paper", 5)])
def test_below_the_smallest_map_is_a_clear_error(rule, side):
    layer = SpatialPyramidPool2d((6, 3, 2, 1), rule=rule)
    with pytest.raises(ValueError, match=rf"a {side}x8 map is smaller than the .* levels \(6, 3, 2, 1\)"):
        layer(torch.zeros(1, 4, side, 8))


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown SPP bin rule 'floor'"):
        SpatialPyramidPool2d((2, 1), rule="floor")
    with pytest.raises(ValueError, match="levels must be positive"):
        SpatialPyramidPool2d((2, 0))
    with pytest.raises(ValueError, match=r"expected \[N, C, H, W\]"):
        SpatialPyramidPool2d((2, 1))(torch.zeros(4, 5, 5))


def test_bin_edges_vectorised_match_the_stated_rules():
    sizes = torch.arange(1, 30)
    for n in (1, 2, 3, 4, 6):
        for rule in ("exact", "paper"):
            lo, hi = bin_edges(sizes, n, rule)
            for k, a in enumerate(sizes.tolist()):
                if rule == "paper" and a < n:
                    continue
                assert list(zip(lo[k].tolist(), hi[k].tolist())) == reference_bins(a, n, rule)
                assert hi[k].max() <= a and bool((hi[k] > lo[k]).all())


def test_paper_rule_leaves_trailing_cells_out_as_documented():
    lo, hi = bin_edges(torch.tensor([8]), 6, "paper")
    assert hi.max().item() == 7  # cell 7 of 8 is in no bin: window 2, stride 1


def test_exact_rule_is_torch_adaptive_max_pool():
    x = torch.randn(2, 5, 11, 7)
    for n in (1, 2, 3, 6, 13):
        expected = torch.nn.functional.adaptive_max_pool2d(x, n)
        torch.testing.assert_close(SpatialPyramidPool2d((n,))(x), expected.flatten(1))


def test_importable_without_the_detector_stack():
    code = ("import sys; from detector.features.spp import SpatialPyramidPool2d; "
            "heavy = [m for m in ('detector.features.pyramid', 'detector.features.backbones', 'torchvision', 'cv2') "
            "if m in sys.modules]; print(heavy)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=sppnet_env())
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stderr
