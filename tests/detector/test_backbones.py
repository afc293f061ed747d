"""Tests for detector/features/backbones.py: shapes, strides, cell centres, freezing, weights, preprocessing."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from detector.features.backbones import (BACKBONE_BUILDERS, PREPROCESS_PRESETS, ImageTooSmallError,
                                Preprocess, WeightsError, WithinChannelLRN, build_backbone,
                                default_preprocess)

EXPECTED_CHANNELS = {"zf5": 256, "tiny": 128, "alexnet": 256, "vgg16": 512, "squeezenet1_0": 512,
                     "mobilenet_v2": 96, "resnet18": 256, "resnet50": 1024}


@pytest.mark.parametrize("name", list(BACKBONE_BUILDERS))
def test_backbone_shapes_stride_and_freezing(name):
    backbone = build_backbone(name)
    assert backbone.out_channels == EXPECTED_CHANNELS[name] and backbone.stride == 16
    with torch.no_grad():
        small = backbone(torch.zeros(1, 3, 64, 80))
        large = backbone(torch.zeros(1, 3, 64 + 32, 80 + 64))  # + 2 and + 4 strides
    assert small.shape[:2] == (1, EXPECTED_CHANNELS[name])
    # Total stride 16: 32 more pixels -> exactly 2 more cells, 64 -> 4.
    assert large.shape[2] - small.shape[2] == 2 and large.shape[3] - small.shape[3] == 4
    assert abs(small.shape[2] - 64 / 16) <= 2 and abs(small.shape[3] - 80 / 16) <= 2
    assert not any(p.requires_grad for p in backbone.parameters())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in backbone.modules())
    backbone.train()
    assert not backbone.training and not any(m.training for m in backbone.modules())


def linearised_copy(trunk: nn.Module) -> nn.Module:
    """The trunk's geometry as a linear, symmetric network (float64): every conv
    averages its window with equal positive weights, max-pools become average
    pools with the same kernel, stride, padding and ceil mode, and activations,
    normalisations and frozen batch norms become identities. Back-propagating
    from one output cell then gives a gradient that is positive over exactly
    the cell's receptive field and symmetric about its centre (random weights
    and max-pools would route it unevenly)."""
    trunk = copy.deepcopy(trunk).double()

    def convert(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, nn.MaxPool2d):
                setattr(module, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding,
                                                   child.ceil_mode))
            elif isinstance(child, (nn.ReLU, nn.ReLU6, WithinChannelLRN, FrozenBatchNorm2d)):
                setattr(module, name, nn.Identity())
            elif isinstance(child, nn.Conv2d):
                child.weight.data.fill_(1.0 / child.weight[0].numel())
                if child.bias is not None:
                    child.bias.data.zero_()
            else:
                convert(child)

    convert(trunk)
    return trunk


@pytest.mark.parametrize("name", list(BACKBONE_BUILDERS))
def test_declared_cell_centres_match_back_propagation(name):
    """Cell j is centred on pixel grid.stride * j + grid.offset (0-based), measured
    as the centroid of the input gradient of one conv5 cell, on both axes."""
    backbone = build_backbone(name)
    side = 320  # every receptive field here (<= 267 px) fits around the middle cell
    image = torch.ones(1, 3, side, side, dtype=torch.float64, requires_grad=True)
    out = linearised_copy(backbone.trunk)(image)
    j = out.shape[-1] // 2
    out[0, :, j, j].sum().backward()
    grad = image.grad[0].sum(0)
    assert bool((grad >= 0).all()) and grad[0].abs().sum() == 0 and grad[:, 0].abs().sum() == 0
    pixels = torch.arange(side, dtype=torch.float64)
    centre_x = float((grad.sum(0) * pixels).sum() / grad.sum())
    centre_y = float((grad.sum(1) * pixels).sum() / grad.sum())
    expected = backbone.grid.stride * j + backbone.grid.offset
    assert backbone.grid.stride == backbone.stride == 16
    assert abs(centre_x - expected) < 1 and abs(centre_y - expected) < 1, (name, centre_x, expected)


@pytest.mark.parametrize("name", ["alexnet", "squeezenet1_0", "zf5"])
def test_min_input_size_is_the_smallest_working_side(name):
    backbone = build_backbone(name)
    side = backbone.min_input_size
    with torch.no_grad():
        out = backbone(torch.zeros(1, 3, side, side + 5))
        assert out.shape[2] >= 1 and out.shape[3] >= 1
        if side > 1:
            # The trunk itself fails (or gives an empty map) one pixel below.
            try:
                below = backbone.trunk(torch.zeros(1, 3, side - 1, side - 1))
                assert min(below.shape[2:]) == 0
            except RuntimeError:
                pass
            with pytest.raises(ImageTooSmallError, match="upscale"):
                backbone(torch.zeros(1, 3, side - 1, 100))


def test_zf5_architecture_matches_design():
    convs = [m for m in build_backbone("zf5").modules() if isinstance(m, nn.Conv2d)]
    spec = [(c.out_channels, c.kernel_size[0], c.stride[0], c.padding[0]) for c in convs]
    assert spec == [(96, 7, 2, 3), (256, 5, 2, 2), (384, 3, 1, 1), (384, 3, 1, 1), (256, 3, 1, 1)]
    pools = [m for m in build_backbone("zf5").modules() if isinstance(m, nn.MaxPool2d)]
    assert [(p.kernel_size, p.stride, p.padding) for p in pools] == [(3, 2, 1), (3, 2, 1)]
    lrns = [m for m in build_backbone("zf5").modules() if isinstance(m, WithinChannelLRN)]
    # The official model's LRN (model-defs/Zeiler_conv5.prototxt).
    assert [(m.size, m.alpha, m.beta) for m in lrns] == [(3, 5e-5, 0.75)] * 2


def test_within_channel_lrn_by_brute_force():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64) * 30
    lrn = WithinChannelLRN(3, alpha=5e-5, beta=0.75)
    padded = nn.functional.pad(x * x, (1, 1, 1, 1))
    expected = torch.empty_like(x)
    for i in range(5):
        for j in range(6):
            mean_sq = padded[:, :, i:i + 3, j:j + 3].sum(dim=(2, 3)) / 9  # Caffe divides by size^2
            expected[:, :, i, j] = x[:, :, i, j] / (1 + 5e-5 * mean_sq) ** 0.75
    torch.testing.assert_close(lrn(x), expected)
    with pytest.raises(ValueError, match="odd"):
        WithinChannelLRN(4, 1e-4, 0.75)


def test_random_init_is_seeded_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b, c = build_backbone("tiny"), build_backbone("tiny"), build_backbone("tiny", seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb)
    assert not all(torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def test_weights_round_trip_full_torchvision_model(tmp_path):
    torch.manual_seed(123)
    full = torchvision.models.resnet18(weights=None)
    # Non-trivial batch-norm statistics, so the frozen-BN conversion is exercised.
    for m in full.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    full.eval()
    path = tmp_path / "r18.pth"
    torch.save(full.state_dict(), path)
    backbone = build_backbone("resnet18", str(path))
    # Every batch norm is frozen, then folded into its conv: none runs with batch statistics.
    assert not any(isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)) for m in backbone.modules())
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        ref = full.layer3(full.layer2(full.layer1(full.maxpool(full.relu(full.bn1(full.conv1(x)))))))
        assert torch.allclose(backbone(x), ref, atol=1e-5)


def test_weights_round_trip_own_trunk(tmp_path):
    source = build_backbone("zf5", seed=5)
    path = tmp_path / "zf5.pth"
    torch.save(source.trunk.state_dict(), path)
    loaded = build_backbone("zf5", str(path))  # default seed 0 differs; file wins
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x))


def test_weights_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(WeightsError, match="nope.pth.*not found"):
        build_backbone("alexnet", str(missing))
    wrong = tmp_path / "alexnet.pth"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), wrong)
    with pytest.raises(WeightsError, match=r"alexnet\.pth: keys do not match.*missing"):
        build_backbone("squeezenet1_0", str(wrong))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="garbage.pth"):
        build_backbone("tiny", str(garbage))
    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_a_dict)
    with pytest.raises(WeightsError, match="list.pth: expected a state_dict"):
        build_backbone("tiny", str(not_a_dict))
    shapes = tmp_path / "shapes.pth"
    state = build_backbone("tiny").trunk.state_dict()
    state["conv1.weight"] = torch.zeros(1)
    torch.save(state, shapes)
    with pytest.raises(WeightsError, match="shapes.pth"):
        build_backbone("tiny", str(shapes))
    with pytest.raises(WeightsError, match="no torchvision weights"):
        build_backbone("zf5", "DEFAULT")


def test_bad_names():
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("resnet101")
    with pytest.raises(ValueError, match="unknown preprocess"):
        build_backbone("tiny", preprocess="bgr")
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        build_backbone("tiny")(torch.zeros(3, 32, 32))


def test_preprocess_presets_by_hand():
    image = np.array([[[10, 20, 30], [0, 128, 255]]], dtype=np.uint8)  # 1 x 2, RGB
    caffe = PREPROCESS_PRESETS["caffe"].apply(image)
    assert caffe.shape == (3, 1, 2) and caffe.dtype == torch.float32
    # BGR order, 0-255, minus (104, 117, 123) in B, G, R order.
    assert caffe[:, 0, 0].tolist() == [30 - 104, 20 - 117, 10 - 123]
    assert caffe[:, 0, 1].tolist() == [255 - 104, 128 - 117, 0 - 123]
    # The official SPP-net input: BGR, 0-255, minus 128.
    assert PREPROCESS_PRESETS["caffe_bgr128"].apply(image)[:, 0, 0].tolist() == [30 - 128, 20 - 128, 10 - 128]
    inception = PREPROCESS_PRESETS["inception"].apply(image)
    assert torch.allclose(inception[:, 0, 1], torch.tensor([-1.0, 128 / 127.5 - 1, 1.0]), atol=1e-6)
    imagenet = PREPROCESS_PRESETS["imagenet"].apply(image)
    expected = (torch.tensor([10, 20, 30]) / 255 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor(
        [0.229, 0.224, 0.225])
    assert torch.allclose(imagenet[:, 0, 0], expected)


def test_preprocess_validation_and_defaults():
    with pytest.raises(ValueError, match="uint8"):
        PREPROCESS_PRESETS["imagenet"].apply(np.zeros((2, 2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        PREPROCESS_PRESETS["imagenet"].apply(np.zeros((2, 2), dtype=np.uint8))
    with pytest.raises(ValueError):
        Preprocess("RBG", 1.0, (0, 0, 0), (1, 1, 1))
    assert default_preprocess(None) == default_preprocess("DEFAULT") == "imagenet"
    assert default_preprocess("/x/mobilenet_v2_imagenet.pth") == "inception"
    assert default_preprocess("/x/squeezenet1_0_imagenet_caffe.pth") == "caffe"
    assert default_preprocess("/x/my_resnet.pth") == "imagenet"
    assert build_backbone("tiny", preprocess="caffe").preprocess == PREPROCESS_PRESETS["caffe"]


def test_batch_norm_folding_is_exact():
    from torchvision.ops import FrozenBatchNorm2d

    from detector.features.backbones import fold_batch_norm, freeze_batch_norm

    torch.manual_seed(0)
    trunk = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                torch.nn.Conv2d(8, 4, 1, bias=False), torch.nn.BatchNorm2d(4))
    for bn in (trunk[1], trunk[4]):  # non-trivial statistics
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-1, 1)
    trunk.eval()
    x = torch.randn(2, 3, 16, 16)
    expected = trunk(x)
    folded = fold_batch_norm(freeze_batch_norm(trunk))
    assert not any(isinstance(m, (FrozenBatchNorm2d, torch.nn.BatchNorm2d)) for m in folded.modules())
    torch.testing.assert_close(folded(x), expected, rtol=1e-5, atol=1e-5)
