"""The model file: one ``.pt`` holding everything a detector needs, loaded safely.

Contents (plain tensors, numbers, strings, lists and dicts only, so
``torch.load(..., weights_only=True)`` reads it without unpickling code):
format version, config, class names, backbone weights, fc weights, SVMs and
box regressors. Written atomically.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .backbones import build_backbone
from .bbox_regression import BoxRegressors
from .config import Config
from .configio import ConfigError, from_dict, to_dict
from .detector import Detector
from .fileio import atomic_path
from .heads import FCHead
from .pooling import SpatialPyramidPool
from .svm import LinearSVMs

MODEL_FORMAT = "sppnet-detector"
MODEL_VERSION = 1


class ModelFileError(ValueError):
    """A model file is missing, corrupt or of another format; the message names it."""


def save_model(path: str | os.PathLike, detector: Detector, extra: dict | None = None) -> None:
    """Write ``detector`` to ``path`` atomically."""
    state = {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "config": to_dict(detector.cfg),
        "class_names": list(detector.class_names),
        "backbone": detector.backbone.state_dict(),
        "head": detector.head.state_dict(),
        "head_shape": [detector.head.fc6.in_features, detector.head.fc6.out_features],
        "svms": detector.svms.to_state_dict(),
        "regressors": detector.regressors.to_state_dict() if detector.regressors is not None else None,
        # Plain JSON types only (versions are str subclasses that weights_only refuses).
        "extra": json.loads(json.dumps(extra or {}, default=str)),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_model(path: str | os.PathLike) -> Detector:
    """Read a model file written by :func:`save_model` (weights_only: no code is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt or unsafe files
        raise ModelFileError(f"{path}: not a readable model file ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format") != MODEL_FORMAT:
        raise ModelFileError(f"{path}: not an SPP-net model file (no '{MODEL_FORMAT}' header)")
    if state.get("version") != MODEL_VERSION:
        raise ModelFileError(f"{path}: model format version {state.get('version')} is not supported "
                             f"(this code reads version {MODEL_VERSION})")
    try:
        cfg = from_dict(Config, state["config"], f"{path}:config")
    except ConfigError as e:
        raise ModelFileError(str(e)) from None
    class_names = state["class_names"]
    # The backbone's weights are inside the file: build it without loading any other weights.
    backbone = build_backbone(cfg.backbone.name, None, preprocess=cfg.backbone.preprocess)
    backbone.load_state_dict(state["backbone"])
    backbone.to(cfg.torch_device())
    pool = SpatialPyramidPool(cfg.pool.levels)
    in_dim, hidden = state["head_shape"]
    if in_dim != pool.output_dim(backbone.out_channels):
        raise ModelFileError(f"{path}: fc6 expects {in_dim} inputs but the backbone and pyramid give "
                             f"{pool.output_dim(backbone.out_channels)}")
    head = FCHead(in_dim, hidden, len(class_names), cfg.finetune.dropout)
    head.load_state_dict(state["head"])
    svms = LinearSVMs.from_state_dict(state["svms"])
    regressors = (BoxRegressors.from_state_dict(state["regressors"])
                  if state.get("regressors") is not None else None)
    return Detector(cfg, class_names, backbone, head, svms, regressors)


def read_model_extra(path: str | os.PathLike) -> dict:
    """The ``extra`` record of a model file (training statistics, versions, timings)."""
    return torch.load(Path(path), map_location="cpu", weights_only=True).get("extra", {})
