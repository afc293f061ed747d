"""The classifier: a backbone's conv map -> spatial pyramid (or global) pooling -> fc layers.

The trunk is cut in two: a frozen front, whose maps depend only on the
image and its size (training computes them once per size and reuses them
every epoch), and the last ``model.trainable_blocks`` blocks, which learn.
The model file holds config, class names and every weight (weights_only).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from ..features.backbones import Backbone, build_backbone
from ..configio import to_dict
from ..fileio import atomic_path
from ..model import read_model_file
from ..features.spp import SpatialPyramidPool2d
from .config import ClassifyConfig

MODEL_FORMAT = "sppnet-classifier"
MODEL_VERSION = 1


class SPPClassifier(nn.Module):
    """frozen front -> trainable blocks -> pool -> fc head.

    Attributes:
        front: the frozen part of the trunk (no parameter learns).
        blocks: the trainable last blocks (an empty Sequential if none).
        pool: :class:`SpatialPyramidPool2d` or global average pooling.
        head: fc layers from the pooled vector to class scores.
    """

    def __init__(self, backbone: Backbone, cfg: ClassifyConfig, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.backbone = backbone  # owns the trunk's weights (saved and loaded whole)
        children = list(backbone.trunk.children())
        cut = _first_trainable_child(children, cfg.model.trainable_blocks, backbone.name)
        self.front = nn.Sequential(*children[:cut])
        self.blocks = nn.Sequential(*children[cut:])
        for p in self.blocks.parameters():
            p.requires_grad_(True)
        channels = backbone.out_channels
        if cfg.model.pool == "spp":
            self.pool = SpatialPyramidPool2d(cfg.model.levels, rule=cfg.model.bin_rule)
            dim = self.pool.output_dim(channels)
        else:
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
            dim = channels
        hidden = cfg.model.hidden
        self.head = (nn.Linear(dim, num_classes) if hidden == 0 else nn.Sequential(
            nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Dropout(cfg.model.dropout),
            nn.Linear(hidden, num_classes)))

    @torch.no_grad()
    def front_maps(self, x: Tensor) -> Tensor:
        """x [B, 3, H, W] preprocessed -> the frozen front's maps (no gradient)."""
        return self.front(x)

    def classify_maps(self, maps: Tensor) -> Tensor:
        """Front maps [B, C', h', w'] -> class scores [B, K] (logits)."""
        conv = self.blocks(maps)
        if isinstance(self.pool, SpatialPyramidPool2d) and min(conv.shape[2:]) < self.pool.min_size:
            raise ValueError(
                f"the conv map of a {self.input_side(maps)} px input is {conv.shape[2]}x{conv.shape[3]} cells, "
                f"smaller than the {self.pool.min_size}x{self.pool.min_size} that levels {self.pool.levels} "
                f"need with the {self.pool.rule!r} bin rule; raise input.sizes or use coarser model.levels")
        return self.head(self.pool(conv))

    def input_side(self, maps: Tensor) -> str:
        return f"~{min(maps.shape[2:]) * self.backbone.stride}"

    def forward(self, x: Tensor) -> Tensor:
        """x [B, 3, H, W] preprocessed images -> class scores [B, K]."""
        return self.classify_maps(self.front_maps(x))


def _first_trainable_child(children: list[nn.Module], blocks: int, name: str) -> int:
    """Index of the first trunk child that learns: the ``blocks``-th last one with parameters."""
    if blocks == 0:
        return len(children)
    with_params = [i for i, m in enumerate(children) if any(True for _ in m.parameters())]
    if blocks > len(with_params):
        raise ValueError(f"model.trainable_blocks = {blocks}, but the {name} trunk has only "
                         f"{len(with_params)} blocks with weights")
    return with_params[-blocks]


def build_classifier(cfg: ClassifyConfig, num_classes: int, weights: str | None = None) -> SPPClassifier:
    """The classifier of ``cfg``, with the backbone's weights from ``weights`` (a file,
    "DEFAULT" or None: random) and a head seeded by ``cfg.seed``."""
    backbone = build_backbone(cfg.backbone.name, weights, preprocess=cfg.backbone.preprocess)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return SPPClassifier(backbone, cfg, num_classes)


def save_classifier(path: str | os.PathLike, model: SPPClassifier, cfg: ClassifyConfig,
                    class_names: tuple[str, ...]) -> None:
    """Write the model file atomically."""
    state = {"format": MODEL_FORMAT, "version": MODEL_VERSION, "config": to_dict(cfg),
             "class_names": list(class_names), "backbone": model.backbone.state_dict(),
             "head": model.head.state_dict()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_classifier(path: str | os.PathLike) -> tuple[SPPClassifier, ClassifyConfig, tuple[str, ...]]:
    """Read a file of :func:`save_classifier`: (model in eval mode, its config, class names)."""
    state, cfg = read_model_file(Path(path), MODEL_FORMAT, MODEL_VERSION, "an SPP-net classifier", ClassifyConfig)
    class_names = tuple(state["class_names"])
    model = build_classifier(cfg, len(class_names))  # weights come from the file, not the config
    model.backbone.load_state_dict(state["backbone"])
    model.head.load_state_dict(state["head"])
    return model.eval(), cfg, class_names
