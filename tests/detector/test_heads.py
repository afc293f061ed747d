"""Tests of detector.heads' test-time compression: truncated SVD and int8 fc layers."""
from __future__ import annotations

import pytest
import torch

from detector.heads import FCHead, compress_head, truncated_svd_linear


def _head(seed=0, in_dim=480, hidden=128):
    """A head whose fc weights have a decaying spectrum, as trained layers do
    (random init has a flat one, which no low rank approximates)."""
    torch.manual_seed(seed)
    head = FCHead(in_dim, hidden, num_classes=3).eval()
    with torch.no_grad():
        for layer in (head.fc6, head.fc7):
            u, _, vh = torch.linalg.svd(layer.weight, full_matrices=False)
            decay = torch.exp(-torch.arange(len(vh), dtype=torch.float32) / 12)
            layer.weight.copy_(u @ torch.diag(decay) @ vh)
    head.input_scale.fill_(0.5)
    return head


def test_full_rank_svd_is_exact_and_none_is_the_head_itself():
    head = _head()
    assert compress_head(head, "none") is head
    x = torch.rand(64, 480)
    exact = compress_head(head, "svd", rank=128)  # 128 = hidden: nothing to truncate
    torch.testing.assert_close(exact.features(x, "fc7"), head.features(x, "fc7"), rtol=1e-4, atol=1e-4)


def test_truncated_svd_is_the_best_low_rank_layer():
    torch.manual_seed(1)
    layer = torch.nn.Linear(200, 100)
    small = truncated_svd_linear(layer, 20)
    assert [m.weight.shape for m in small] == [(20, 200), (100, 20)]
    product = (small[1].weight @ small[0].weight).detach()
    s = torch.linalg.svdvals(layer.weight.detach().double())
    # Eckart-Young: the error's spectral norm is the first dropped singular value.
    assert float(torch.linalg.matrix_norm(layer.weight.detach().double() - product.double(), 2)) == pytest.approx(
        float(s[20]), rel=1e-4)


@pytest.mark.parametrize("method", ["svd", "int8", "svd_int8"])
def test_compressed_fc7_stays_close(method):
    head = _head()
    x = torch.rand(256, 480) * 4
    ref = head.features(x, "fc7")
    got = compress_head(head, method, rank=96).features(x, "fc7")
    assert got.shape == ref.shape
    rel = float((got - ref).norm() / ref.norm())
    assert rel < 0.15, rel
    # The original head is untouched (training may still use it).
    assert isinstance(head.fc6, torch.nn.Linear) and float(head.input_scale) == 0.5


def test_unknown_method_is_an_error():
    with pytest.raises(ValueError, match="fc compression"):
        compress_head(_head(), "fp8")
