"""Frozen convolutional trunks ("conv5") for SPP-net, and their preprocessing.

SPP-net runs the conv layers once per image and scale and never trains them
(fine-tuning touches only fc layers), so every :class:`Backbone` is frozen:
parameters have ``requires_grad=False``, batch norm is replaced by
``torchvision.ops.FrozenBatchNorm2d`` and the module stays in eval mode even
when ``.train()`` is called.

Each trunk ends at total stride 16, the paper's conv5 stride. Where its cells
sit in the image depends on the padding: cell j is centred on pixel
``16 j + offset`` (0-based), the backbone's :class:`~detector.features.pyramid.FeatureGrid`,
which the window mapping uses (measured by back-propagating from one cell in
tests/test_backbones.py; docs/window_mapping.md):

=============  =====  ==========================================  ======  =========
name           C      trunk                                        offset  default
                                                                   (px)    weights
=============  =====  ==========================================  ======  =========
zf5            256    the paper's ZF-5 (design.md), pads floor(p/2)  0     random
alexnet        256    features without the last max-pool           15     random
vgg16          512    conv5_3 + ReLU (features without last pool)  7.5    random
squeezenet1_0  512    features (ends at fire9)                     17     random
mobilenet_v2   96     features[:14]                                0      random
resnet18       256    conv1 .. layer3 (C4)                         0      random
resnet50       1024   conv1 .. layer3 (C4)                         0      random
tiny           128    5 small convs, for the demo on CPU           0      random
=============  =====  ==========================================  ======  =========

Preprocessing is a :class:`Preprocess` record, chosen by name
(:data:`PREPROCESS_PRESETS`): the weights decide it, not the architecture.
torchvision's ImageNet weights want "imagenet"; the shared development files
want "inception" (mobilenet_v2_imagenet.pth, pixels in [-1, 1]) and "caffe"
(squeezenet1_0_imagenet_caffe.pth, BGR 0-255 minus the mean);
:data:`KNOWN_WEIGHT_FILES` records those two by file name. The official
SPP-net ZF-5 weights want "caffe_bgr128" (BGR 0-255 minus 128).
"""
from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from typing import Callable, Mapping

import torch
from torch.nn.utils.fusion import fuse_conv_bn_weights
import torchvision
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d

from ..images import ImageTooSmallError
from .pyramid import FeatureGrid
from .preprocess import PREPROCESS_PRESETS, Preprocess  # noqa: F401 (torch-free; re-exported)

# SPP-net's conv5 stride; every trunk here is cut to end there.
FEATURE_STRIDE = 16
# Random init is seeded so that a random backbone (zf5/tiny in the demo) gives
# the same features in every process: cached maps stay valid.
DEFAULT_INIT_SEED = 0


class WeightsError(ValueError):
    """A weights file is missing, unreadable or does not fit the architecture."""


# Local weight files whose preprocessing is not torchvision's (see
# /work/shared/weights/README.md), keyed by file name.
KNOWN_WEIGHT_FILES: dict[str, str] = {
    "mobilenet_v2_imagenet.pth": "inception",
    "squeezenet1_0_imagenet_caffe.pth": "caffe",
}


def default_preprocess(weights: str | None) -> str:
    """Preset name for ``weights``: the table above for known files, else
    "imagenet" (torchvision's convention, also used for random init)."""
    if weights and weights != "DEFAULT":
        return KNOWN_WEIGHT_FILES.get(os.path.basename(weights), "imagenet")
    return "imagenet"


class Backbone(nn.Module):
    """A frozen conv trunk: images [B, 3, H, W] -> conv5 maps [B, C, h, w].

    Attributes:
        name: architecture name (a key of :data:`BACKBONE_BUILDERS`).
        grid: where the cells sit: cell j is centred on pixel
            ``grid.stride * j + grid.offset``.
        stride: total stride S (16): a map cell covers S x S image pixels.
        out_channels: C.
        preprocess: the input convention of the loaded weights.
        min_input_size: smallest image side (pixels) that still gives a map of
            at least 1 x 1 cells; smaller inputs raise ImageTooSmallError.
    """

    def __init__(self, name: str, trunk: nn.Module, grid: FeatureGrid, out_channels: int,
                 preprocess: Preprocess):
        super().__init__()
        self.name = name
        self.trunk = fold_batch_norm(freeze_batch_norm(trunk))
        self.grid = grid
        self.stride = grid.stride
        self.out_channels = out_channels
        self.preprocess = preprocess
        for p in self.trunk.parameters():
            p.requires_grad_(False)
        super().train(False)
        self.min_input_size = _find_min_input_size(self.trunk)

    def digest(self) -> str:
        """Digest of the architecture, preprocessing and weights: keys feature caches, so
        maps from other weights (another file, a fine-tuned trunk) are never reused."""
        return _weights_digest(f"{self.name}|{self.preprocess}", self)

    def prefix_digest(self, blocks: int) -> str:
        """Digest of the frozen prefix that :meth:`split` leaves before the last ``blocks``
        learning blocks (architecture, preprocessing, the cut and the prefix's weights only):
        keys the frozen-prefix cache, which fine-tuning the suffix does not make stale."""
        prefix, _ = self.split(blocks)
        return _weights_digest(f"{self.name}|{self.preprocess}|prefix of {len(prefix)}", prefix)

    @property
    def device(self) -> torch.device:
        """Where the conv layers run (inputs are moved there; maps come back to the CPU)."""
        return next(self.trunk.parameters()).device

    def unfreeze_last(self, blocks: int) -> list[nn.Parameter]:
        """Let the last ``blocks`` parameterised children of the trunk learn (conv
        fine-tuning); return their parameters. Batch norm stays frozen (folded or
        FrozenBatchNorm2d), and the module stays in eval mode."""
        _, suffix = self.split(blocks)
        params = list(suffix.parameters())
        for p in params:
            p.requires_grad_(True)
        return params

    def split(self, blocks: int) -> tuple[nn.Sequential, nn.Sequential]:
        """The trunk cut before its last ``blocks`` parameterised children: (frozen prefix,
        learning suffix), sharing this trunk's modules, so ``suffix(prefix(x)) == trunk(x)``
        and the suffix's parameters are the ones :meth:`unfreeze_last` lets learn."""
        children = list(self.trunk.children())
        learning = [i for i, m in enumerate(children) if any(True for _ in m.parameters())]
        if not 0 < blocks <= len(learning):
            raise ValueError(f"{self.name}: can fine-tune 1 to {len(learning)} conv blocks, not {blocks}")
        cut = learning[-blocks]
        return nn.Sequential(*children[:cut]), nn.Sequential(*children[cut:])

    def freeze(self) -> None:
        """Back to the frozen trunk of SPP-net: no parameter learns."""
        for p in self.trunk.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> "Backbone":
        """Stays in eval mode: the conv layers are fixed in SPP-net and the
        folded batch norm of some weights breaks with batch statistics."""
        return super().train(False)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, 3, H, W] preprocessed images -> [B, C, h, w] with h ~ H / stride."""
        return self.trunk(self.check_input(x))

    def check_input(self, x: Tensor) -> Tensor:
        """``x`` if it is a batch [B, 3, H, W] large enough for a 1 x 1 map; else ValueError."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.name}: expected input [B, 3, H, W], got {tuple(x.shape)}")
        if min(x.shape[2], x.shape[3]) < self.min_input_size:
            raise ImageTooSmallError(
                f"{self.name}: input {x.shape[2]}x{x.shape[3]} is smaller than the minimum side "
                f"{self.min_input_size} px that gives a 1x1 feature map; upscale the image")
        return x


def _weights_digest(label: str, module: nn.Module) -> str:
    """16 hex digits of ``label`` and every tensor of ``module``'s state (name and bytes)."""
    h = hashlib.sha1(label.encode())
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d in ``module`` by a FrozenBatchNorm2d with the
    same statistics, affine parameters and eps (in place; returns module)."""
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        frozen.weight.copy_(module.weight.detach())
        frozen.bias.copy_(module.bias.detach())
        frozen.running_mean.copy_(module.running_mean)
        frozen.running_var.copy_(module.running_var)
        return frozen
    for child_name, child in module.named_children():
        replaced = freeze_batch_norm(child)
        if replaced is not child:
            setattr(module, child_name, replaced)
    return module


def _fold_pair(conv: nn.Module, bn: nn.Module) -> nn.Conv2d | None:
    """A Conv2d equal to ``bn(conv(x))`` for a frozen batch norm, or None if not foldable."""
    if not isinstance(conv, nn.Conv2d) or not isinstance(bn, (FrozenBatchNorm2d, nn.BatchNorm2d)):
        return None
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)
    w, b = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps,
                                bn.weight, bn.bias)
    fused.weight.data.copy_(w.detach())
    fused.bias.data.copy_(b.detach())
    return fused


def fold_batch_norm(module: nn.Module) -> nn.Module:
    """Fold every frozen batch norm that directly follows a conv into the conv (in place).

    Inference-only and exact up to float rounding: it removes one pass over
    each activation map, which on the CPU makes MobileNetV2 and ResNet trunks
    markedly faster. Pairs are found as consecutive children of a Sequential
    and as ``convN``/``bnN`` attributes (torchvision's ResNet blocks).
    """
    if isinstance(module, nn.Sequential):
        names = list(module._modules)
        for a, b in zip(names, names[1:]):
            fused = _fold_pair(module._modules[a], module._modules[b])
            if fused is not None:
                module._modules[a], module._modules[b] = fused, nn.Identity()
    for name in list(module._modules):
        if name.startswith("conv") and f"bn{name[4:]}" in module._modules:
            fused = _fold_pair(module._modules[name], module._modules[f"bn{name[4:]}"])
            if fused is not None:
                module._modules[name], module._modules[f"bn{name[4:]}"] = fused, nn.Identity()
    for child in module.children():
        fold_batch_norm(child)
    return module


def _find_min_input_size(trunk: nn.Module, limit: int = 4096) -> int:
    """Smallest square input side that gives a non-empty output (probed with
    zeros: exact for any trunk, however its padding and ceil modes combine)."""
    def works(side: int) -> bool:
        try:
            with torch.no_grad():
                out = trunk(torch.zeros(1, 3, side, side))
        except RuntimeError:  # "Output size is too small" from a conv/pool
            return False
        return out.shape[-1] >= 1 and out.shape[-2] >= 1

    hi = 1
    while not works(hi):
        hi *= 2
        if hi > limit:
            raise ValueError(f"backbone gives no output even for {limit}x{limit} inputs")
    lo = hi // 2  # fails (or 0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if works(mid) else (mid, hi)
    return hi


# --- architectures -----------------------------------------------------------

class WithinChannelLRN(nn.Module):
    """Caffe's LRN with ``norm_region: WITHIN_CHANNEL``:
    ``x / (1 + alpha * mean(x^2 over a size x size window))^beta``, per channel;
    the window is centred and zero-padded, and the mean divides by size^2
    (Caffe averages the squares with a padded AVE pool)."""

    def __init__(self, size: int, alpha: float, beta: float):
        super().__init__()
        if size % 2 != 1:
            raise ValueError(f"WithinChannelLRN: size must be odd, got {size}")
        self.size, self.alpha, self.beta = size, alpha, beta

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}"

    def forward(self, x: Tensor) -> Tensor:
        mean_sq = nn.functional.avg_pool2d(x * x, self.size, stride=1, padding=self.size // 2,
                                           count_include_pad=True)
        return x / (1 + self.alpha * mean_sq).pow(self.beta)


def _zf5() -> nn.Module:
    """ZF-5 as in the SPP-net paper: every conv and pool pads floor(p/2), the
    padding Appendix A's window mapping assumes. Its LRN is the official
    model's (model-defs/Zeiler_conv5.prototxt: within-channel, size 3, alpha
    5e-5, beta 0.75), so that converted official weights compute what they
    were trained to. (That prototxt pads conv1 by 1, conv2 by 0 and not the
    pools, which moves its cells to 16 j + 20; the weights fit either way.)"""
    def lrn() -> nn.Module:
        return WithinChannelLRN(3, alpha=5e-5, beta=0.75)
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(3, 96, 7, stride=2, padding=3)), ("relu1", nn.ReLU(inplace=True)),
        ("norm1", lrn()), ("pool1", nn.MaxPool2d(3, stride=2, padding=1)),
        ("conv2", nn.Conv2d(96, 256, 5, stride=2, padding=2)), ("relu2", nn.ReLU(inplace=True)),
        ("norm2", lrn()), ("pool2", nn.MaxPool2d(3, stride=2, padding=1)),
        ("conv3", nn.Conv2d(256, 384, 3, padding=1)), ("relu3", nn.ReLU(inplace=True)),
        ("conv4", nn.Conv2d(384, 384, 3, padding=1)), ("relu4", nn.ReLU(inplace=True)),
        ("conv5", nn.Conv2d(384, 256, 3, padding=1)), ("relu5", nn.ReLU(inplace=True)),
    ]))


def _tiny() -> nn.Module:
    """Five 3x3/5x5 convs, stride 16, 64-128 channels: fast on the CPU.

    Downsampling is by strided convs, not max-pools, so colour survives the
    early layers; Kaiming init keeps random-feature activations at a useful
    scale, so random features already separate simple coloured shapes."""
    layers: list[tuple[str, nn.Module]] = []
    specs = [(3, 64, 5, 2), (64, 64, 3, 2), (64, 128, 3, 2), (128, 128, 3, 2), (128, 128, 3, 1)]
    for i, (cin, cout, k, s) in enumerate(specs, start=1):
        conv = nn.Conv2d(cin, cout, k, stride=s, padding=k // 2)
        nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
        nn.init.zeros_(conv.bias)
        layers += [(f"conv{i}", conv), (f"relu{i}", nn.ReLU(inplace=True))]
    return nn.Sequential(OrderedDict(layers))


def _cut_resnet(model: nn.Module) -> nn.Module:
    return nn.Sequential(OrderedDict(
        (n, getattr(model, n)) for n in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3")))


# name -> (full torchvision model constructor or None for our own trunks,
#          cut: full model -> stride-16 trunk, out_channels,
#          cell offset: conv5 cell j is centred on 0-based pixel 16 j + offset).
# Offsets follow from the padding: every layer padding floor(k/2) centres
# cells on 16 j (the paper's assumption); a k x k layer padded p moves them
# by (k - 1)/2 - p of its input's pixel steps (a 2x2 pool: half a step).
_TorchvisionSpec = tuple[Callable[..., nn.Module] | None, Callable[[nn.Module], nn.Module], int, float]
BACKBONE_BUILDERS: dict[str, _TorchvisionSpec] = {
    "zf5": (None, lambda m: m, 256, 0.0),
    "tiny": (None, lambda m: m, 128, 0.0),
    # features[:12] drops the last max-pool: stride 4*2*2 = 16. conv1 11x11/4
    # pad 2 (+3 px), unpadded 3x3/2 max-pools (+4, +8 px): offset 15.
    "alexnet": (torchvision.models.alexnet, lambda m: m.features[:12], 256, 15.0),
    # features[:30] ends at conv5_3's ReLU, before pool5: stride 16. Four
    # 2x2/2 pools add 0.5 + 1 + 2 + 4 px: offset 7.5.
    "vgg16": (torchvision.models.vgg16, lambda m: m.features[:30], 512, 7.5),
    # Its features already end at fire9 with stride 2*2*2*2 = 16 (ceil-mode
    # pools). conv1 7x7/2 unpadded (+3 px), unpadded 3x3/2 max-pools (+2, +4,
    # +8 px): offset 17.
    "squeezenet1_0": (torchvision.models.squeezenet1_0, lambda m: m.features, 512, 17.0),
    "mobilenet_v2": (torchvision.models.mobilenet_v2, lambda m: m.features[:14], 96, 0.0),
    "resnet18": (torchvision.models.resnet18, _cut_resnet, 256, 0.0),
    "resnet50": (torchvision.models.resnet50, _cut_resnet, 1024, 0.0),
}
_OWN_TRUNKS: dict[str, Callable[[], nn.Module]] = {"zf5": _zf5, "tiny": _tiny}


def build_backbone(name: str, weights: str | None = None, preprocess: str | None = None,
                   seed: int = DEFAULT_INIT_SEED) -> Backbone:
    """Build a frozen stride-16 trunk.

    Args:
        name: one of :data:`BACKBONE_BUILDERS`.
        weights: None: random init (seeded by ``seed``, same in every
            process); "DEFAULT": torchvision's ImageNet weights (downloads;
            not for zf5/tiny); otherwise a local state_dict file of the FULL
            torchvision model (for zf5/tiny: of the trunk,
            ``backbone.trunk.state_dict()``).
        preprocess: a :data:`PREPROCESS_PRESETS` name ("imagenet", "caffe",
            "inception"), or None for :func:`default_preprocess` of the weights.
        seed: seed of the random init (ignored when weights are loaded).
    Raises:
        ValueError: unknown name or preset; WeightsError for weight problems.
    """
    if name not in BACKBONE_BUILDERS:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONE_BUILDERS)}")
    preset = preprocess if preprocess is not None else default_preprocess(weights)
    if preset not in PREPROCESS_PRESETS:
        raise ValueError(f"unknown preprocess {preset!r}; choose one of {', '.join(PREPROCESS_PRESETS)}")
    constructor, cut, channels, cell_offset = BACKBONE_BUILDERS[name]
    if weights == "DEFAULT":
        if constructor is None:
            raise WeightsError(f"{name}: there are no torchvision weights; pass None or a file")
        model = constructor(weights="DEFAULT")
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _OWN_TRUNKS[name]() if constructor is None else constructor(weights=None)
        if weights is not None:
            load_weights_file(model, weights, name)
    return Backbone(name, cut(model), FeatureGrid(FEATURE_STRIDE, cell_offset), channels,
                    PREPROCESS_PRESETS[preset])


def load_weights_file(model: nn.Module, path: str | os.PathLike, name: str = "model") -> None:
    """Load a state_dict file into ``model`` with exactly matching keys.

    Raises:
        WeightsError naming the file: missing/unreadable file, not a
        state_dict, mismatched keys (a few listed) or tensor shapes.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightsError(f"{path}: weights file not found")
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:  # pickle/zip errors come in many types
        raise WeightsError(f"{path}: cannot read a state_dict ({type(err).__name__}: {err})") from err
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise WeightsError(f"{path}: expected a state_dict (name -> tensor), got {type(state).__name__}")
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise WeightsError(
            f"{path}: keys do not match the full {name} model: "
            f"{len(missing)} missing (e.g. {missing[:4]}), {len(unexpected)} unexpected "
            f"(e.g. {unexpected[:4]})")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:  # size mismatches
        raise WeightsError(f"{path}: tensors do not fit {name}: {err}") from err
