"""The one place that turns a config into objects: datasets, backbone, pyramid,
window features, head, the detector (also from a model file's parts) and the
split a model is tested on.

Every other module takes explicit arguments: the config sections it reads. The
whole :class:`~detector.config.Config` is read only by builders: these, a model
file's (``detector.model.load_trained``), a training run's
(``detector.training.train``: the settings every stage shares, and each declared
stage's own sections), an export's and its torch-free runtime's
(``detector.deploy``); tests/test_import_graph.py keeps that list.
"""
from __future__ import annotations

import dataclasses
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .features.backbones import Backbone, WeightsError, build_backbone
from .config import BackboneConfig, Config, DataConfig
from .data import Dataset, load_dataset
from .inference.detector import Detector
from .devices import resolve_device
from .heads import FCHead, compress_head
from .features.pyramid import SpatialPyramidPool
from .features.pool5 import SPPFeatures, WindowFeatures
from .features.window_rules import WindowRules


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
        from .features.rcnn_crops import CropFeatures
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


def multi_scale(cfg: Config) -> bool:
    """Whether the window features have several scales to choose from (SPP at several
    scales; R-CNN mode has no scales)."""
    return cfg.mode == "spp" and len(cfg.features.scales) > 1


def build_detector(cfg: Config, class_names: Sequence[str], backbone: Backbone, head: FCHead, svms,
                   regressors=None, cache_root: str | os.PathLike | None = None) -> Detector:
    """A :class:`~detector.inference.detector.Detector` from trained parts and the config they came from.

    The detector keeps only what it runs (the test section, the search, the SVMs' feature);
    the config stays with the caller as provenance (the model file stores it).
    """
    if cfg.test.scorer == "softmax" and not cfg.finetune.enabled:
        raise ValueError("test.scorer=softmax needs the fine-tuned classifier, but this model was "
                         "trained with finetune.enabled=false; use test.scorer=svm")
    return Detector(build_window_features(cfg, backbone, cache_root), head, svms,
                    regressors if cfg.bbox.enabled else None, class_names,
                    test=cfg.test, svm_feature=cfg.svm.feature, proposals=cfg.proposals)


def build_stored_backbone(cfg: Config, state: dict, device: str | torch.device | None) -> Backbone:
    """The configured backbone with a model file's weights (no other weights are loaded), on ``device``."""
    backbone = build_backbone(cfg.backbone.name, None, preprocess=cfg.backbone.preprocess)
    backbone.load_state_dict(state)
    return backbone.to(resolve_device(device))


def build_stored_head(cfg: Config, state: dict, in_dim: int, hidden: int, num_classes: int) -> FCHead:
    """A model file's fc layers, compressed as ``test.fc_compression`` says (test time only: a
    loaded detector is not saved again)."""
    head = FCHead(in_dim, hidden, num_classes, cfg.finetune.dropout)
    head.load_state_dict(state)
    return compress_head(head, cfg.test.fc_compression, cfg.test.svd_rank)


@dataclass(frozen=True)
class EvaluationData:
    """A split to test a model on, as its config (or the command line) places it.

    ``dataset`` has the model's classes (objects of others are left out); ``root``
    is where it is read from; ``strict_images``: an unreadable image is an error,
    not skipped; ``cache_root`` holds its proposals (and cached test features).
    """

    dataset: Dataset
    root: str
    strict_images: bool
    cache_root: Path


def build_evaluation_data(cfg: Config, split: str, class_names: Sequence[str],
                          root: str | os.PathLike | None = None, format: str | None = None,
                          cache_dir: str | os.PathLike | None = None) -> EvaluationData:
    """``split`` of the model's dataset (or the copy at ``root``, in ``format``), with the model's
    class order, cached under ``cache_dir`` (default the config's cache root)."""
    dataset = build_dataset(cfg.data, split, class_names=class_names, root=root, format=format,
                            drop_other_classes=True)
    return EvaluationData(dataset, str(root or cfg.data.root), cfg.data.strict_images,
                          Path(cache_dir) if cache_dir is not None else cfg.cache_root())
