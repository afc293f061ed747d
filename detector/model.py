"""The model file: one ``.pt`` holding everything a detector needs, loaded safely.

Contents (plain tensors, numbers, strings, lists and dicts only, so
``torch.load(..., weights_only=True)`` reads it without unpickling code):
format version, config, class names, backbone weights, fc weights, SVMs and
box regressors. Written atomically.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .training.bbox_regression import BoxRegressors
from .build import build_detector, build_pool, build_stored_backbone, build_stored_head
from .config import Config, with_test_overrides, without_retired_keys
from .configio import ConfigError, from_dict, to_dict
from .inference.detector import Detector
from .fileio import atomic_path
from .features.pyramid import MAPPING_VERSION
from .training.svm import LinearSVMs

logger = logging.getLogger(__name__)

MODEL_FORMAT = "sppnet-detector"
MODEL_VERSION = 1


class ModelFileError(ValueError):
    """A model file is missing, corrupt or of another format; the message names it."""


@dataclass(frozen=True)
class TrainedModel:
    """A model file's detector and the config it was trained with (with any test-time
    overrides): the detector runs, the config is provenance for the builders and reports."""

    detector: Detector
    config: Config


def save_model(path: str | os.PathLike, detector: Detector, config: Config, extra: dict | None = None) -> None:
    """Write ``detector`` to ``path`` atomically, with ``config`` (what it was trained with) as provenance."""
    state = {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "config": to_dict(config),
        "class_names": list(detector.class_names),
        "backbone": detector.backbone.state_dict(),
        "head": detector.head.state_dict(),
        "head_shape": [detector.head.fc6.in_features, detector.head.fc6.out_features],
        "svms": detector.svms.to_state_dict(),
        "mapping_version": MAPPING_VERSION,
        "regressors": detector.regressors.to_state_dict() if detector.regressors is not None else None,
        # Plain JSON types only (versions are str subclasses that weights_only refuses).
        "extra": json.loads(json.dumps(extra or {}, default=str)),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_model(path: str | os.PathLike, device: str | torch.device | None = "auto",
               overrides: list[str] | None = None) -> Detector:
    """The detector of a model file (:func:`load_trained` without the config)."""
    return load_trained(path, device, overrides).detector


def load_trained(path: str | os.PathLike, device: str | torch.device | None = "auto",
                 overrides: list[str] | None = None) -> TrainedModel:
    """Read a model file written by :func:`save_model` (weights_only: no code is unpickled).

    Args:
        device: where the conv layers run: "auto" (CUDA when available), "cpu"
            or "cuda[:N]". A run-time choice: a model trained on a GPU loads on
            a CPU-only machine.
        overrides: test-time ``key=value`` changes of the stored config (other
            scales, NMS threshold, windows; see
            :func:`detector.config.with_test_overrides`).
    """
    path = Path(path)
    state, cfg = read_model_file(path, MODEL_FORMAT, MODEL_VERSION, "an SPP-net model", Config,
                                 without_retired_keys)
    cfg = with_test_overrides(cfg, overrides)
    if state.get("mapping_version", 1) != MAPPING_VERSION:
        logger.warning("%s: trained with window-mapping rule %s, this code maps windows with rule %s: its "
                       "pooled features (and scores) differ from training's; retrain it for trustworthy "
                       "results", path, state.get("mapping_version", 1), MAPPING_VERSION)
    class_names = state["class_names"]
    backbone = build_stored_backbone(cfg, state["backbone"], device)
    pooled_dim = build_pool(cfg).output_dim(backbone.out_channels)
    in_dim, hidden = state["head_shape"]
    if in_dim != pooled_dim:
        raise ModelFileError(f"{path}: fc6 expects {in_dim} inputs but the backbone and pyramid give {pooled_dim}")
    head = build_stored_head(cfg, state["head"], in_dim, hidden, len(class_names))
    svms = LinearSVMs.from_state_dict(state["svms"])
    regressors = (BoxRegressors.from_state_dict(state["regressors"])
                  if state.get("regressors") is not None else None)
    return TrainedModel(build_detector(cfg, class_names, backbone, head, svms, regressors), cfg)


def read_model_config(path: str | os.PathLike, overrides: list[str] | None = None) -> Config:
    """The config a model file was trained with (its provenance), with test-time ``overrides``;
    nothing is built."""
    _, cfg = read_model_file(Path(path), MODEL_FORMAT, MODEL_VERSION, "an SPP-net model", Config,
                             without_retired_keys)
    return with_test_overrides(cfg, overrides)


def read_model_file(path: Path, format: str, version: int, what: str, config_class: type,
                    upgrade: Callable[[dict], dict] | None = None) -> tuple[dict, object]:
    """A model file's state dict (weights_only) and its config, after checking the
    format header and version; every problem is a ModelFileError naming the file.
    ``upgrade``: applied to the stored config dict first (e.g. dropping retired keys)."""
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt or unsafe files
        raise ModelFileError(f"{path}: not a readable model file ({_first_line(e)})") from None
    if not isinstance(state, dict) or state.get("format") != format:
        raise ModelFileError(f"{path}: not {what} file (no '{format}' header)")
    if state.get("version") != version:
        raise ModelFileError(f"{path}: model format version {state.get('version')} is not supported "
                             f"(this code reads version {version})")
    try:
        stored = upgrade(state["config"]) if upgrade is not None else state["config"]
        return state, from_dict(config_class, stored, f"{path}:config")
    except ConfigError as e:
        raise ModelFileError(str(e)) from None


def _first_line(e: Exception) -> str:
    """torch's error in one line, without its advice to re-run with weights_only=False
    (never do that with a file you did not write: unpickling can run arbitrary code)."""
    if isinstance(e, pickle.UnpicklingError):
        return ("it holds pickled Python objects besides tensors and plain values; they are not "
                "loaded, since unpickling them could run code")
    first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
    sentence = first.split(". ")[0].rstrip(".")
    return f"{type(e).__name__}: {sentence[:200]}"
