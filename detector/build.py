"""The one place that turns a config into objects: datasets, backbone, pyramid,
window features, head and the detector.

Every other module takes explicit arguments; only these builders read the
:class:`~detector.config.Config`.
"""
from __future__ import annotations

import dataclasses

import os
import random
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .backbones import Backbone, WeightsError, build_backbone
from .config import BackboneConfig, Config, DataConfig
from .data import Dataset, load_dataset
from .devices import resolve_device
from .heads import FCHead
from .pooling import SpatialPyramidPool
from .window_features import SPPFeatures, WindowFeatures
from .window_rules import WindowRules


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_dataset(data: DataConfig, split: str, class_names: Sequence[str] | None = None,
                  root: str | os.PathLike | None = None, format: str | None = None,
                  require_images: bool = True, drop_other_classes: bool = False) -> Dataset:
    """``split`` of the configured dataset.

    ``class_names`` (e.g. a model's) override the config's; ``root`` and
    ``format`` override ``data.root`` / ``data.format`` (testing a model on
    another copy of the data). ``require_images=False`` reads annotations
    only (evaluation needs no pixels). ``drop_other_classes``: objects of
    classes not in ``class_names`` are left out, not an error (see
    :func:`~detector.data.load_dataset`).
    """
    return load_dataset(root if root is not None else data.root, split, format=format or data.format,
                        class_names=class_names or data.class_names or None,
                        annotations=data.annotations, images=data.images, require_images=require_images,
                        drop_other_classes=drop_other_classes)


def check_weights(cfg: BackboneConfig) -> None:
    """Fail now, before any stage runs, if ``backbone.weights`` names a file that is not there."""
    w = cfg.weights
    if w not in (None, "DEFAULT") and not Path(w).is_file():
        raise WeightsError(f"backbone.weights: {w}: no such weights file")


def build_config_backbone(cfg: Config, device: str | torch.device | None = None) -> Backbone:
    """The configured backbone on ``device`` (default ``cfg.device``); a random init is seeded by ``cfg.seed``."""
    b = cfg.backbone
    check_weights(b)
    backbone = build_backbone(b.name, b.weights, preprocess=b.preprocess, seed=cfg.seed)
    return backbone.to(resolve_device(cfg.device if device is None else device))


def build_pool(cfg: Config) -> SpatialPyramidPool:
    return SpatialPyramidPool(cfg.pool.levels)


def build_head(cfg: Config, in_dim: int, num_classes: int) -> FCHead:
    return FCHead(in_dim, cfg.finetune.hidden, num_classes, cfg.finetune.dropout)


def window_rules(cfg: Config) -> WindowRules:
    """The window -> cells rules the config names."""
    return WindowRules(cfg.pool.canonical_window, cfg.pool.window_margin, cfg.features.scale_rule,
                       cfg.pool.window_scaling)


def build_window_features(cfg: Config, backbone: Backbone,
                          cache_root: str | os.PathLike | None = None) -> WindowFeatures:
    """SPP features (``mode: spp``) or warped-crop features (``mode: rcnn``) on ``backbone``,
    caching under ``cache_root`` when given."""
    pool = build_pool(cfg)
    if cfg.mode == "rcnn":
        from .rcnn import CropFeatures
        features: WindowFeatures = CropFeatures(backbone, pool, cfg.rcnn.crop_size, cfg.rcnn.context_pad)
    else:
        features = SPPFeatures(backbone, pool, cfg.features.scales, cfg.features.max_size,
                               window_rules(cfg), cfg.features.cache_dtype)
    return features.with_cache(cache_root) if cache_root is not None else features


def window_features_key(cfg: Config, spp_features: dict) -> dict:
    """What the window features read from the config, for the stage keys: R-CNN mode's crops,
    or ``spp_features`` (the ``features`` section as the stage keys hold it)."""
    if cfg.mode == "rcnn":
        return {"mode": "rcnn", "rcnn": dataclasses.asdict(cfg.rcnn)}
    return {"mode": "spp", "features": spp_features}


def random_training_scales(cfg: Config) -> bool:
    """Whether fine-tuning pools each window at a random scale (SPP at several scales with
    ``finetune.random_scale``; R-CNN mode has no scales)."""
    return cfg.mode == "spp" and len(cfg.features.scales) > 1 and cfg.finetune.random_scale


def build_detector(cfg: Config, class_names: Sequence[str], backbone: Backbone, head: FCHead, svms,
                   regressors=None, cache_root: str | os.PathLike | None = None):
    """A :class:`~detector.detector.Detector` from trained parts and the config they came from."""
    from .detector import Detector

    return Detector(build_window_features(cfg, backbone, cache_root), head, svms,
                    regressors if cfg.bbox.enabled else None, class_names,
                    test=cfg.test, svm_feature=cfg.svm.feature, proposals=cfg.proposals, config=cfg)
