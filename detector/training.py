"""Training, one resumable stage after another.

1. proposals (cached per image by ``proposals``),
2. conv5 maps (cached per image, float16),
3. a pass that pools the fine-tuning windows and the box-regression windows,
4. fine-tuning fc6/fc7 + a (K+1)-way classifier (conv layers frozen),
5. per-class linear SVMs with hard-negative mining,
6. per-class ridge box regression on pool5,
then one model file. Stages 4-6 save their result under ``workdir/stages``
keyed by every parameter they depend on, so a killed or repeated run picks up
where it stopped and a changed parameter re-runs only what it affects.
"""
from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from .backbones import Backbone, build_backbone
from .bbox_regression import BoxRegressors, train_box_regressors
from .config import Config
from .configio import to_dict
from .data import load_dataset
from .detector import Detector
from .evaluation.report import collect_versions
from .features import FeatureCache, cached_feature_maps, feature_cache_key
from .fileio import atomic_path, file_digest, params_digest
from .finetune import finetune_head, label_windows
from .heads import FCHead
from .images import read_image
from .model import save_model
from .pooling import SpatialPyramidPool
from .rcnn import window_feature_cache
from .svm import LinearSVMs, TrainImage, train_svms
from .window_features import match_windows, pool_windows

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_dataset(cfg: Config, split: str, class_names=None):
    """The configured dataset's ``split``; ``class_names`` (e.g. a model's) override the config's."""
    d = cfg.data
    return load_dataset(d.root, split, format=d.format, class_names=class_names or d.class_names or None,
                        annotations=d.annotations, images=d.images)


def weights_identity(cfg: Config) -> str:
    """What the backbone's weights are, for cache keys: file digest, 'DEFAULT' or the init seed."""
    w = cfg.backbone.weights
    if w is None:
        return f"random-init-seed{cfg.seed}"
    if w == "DEFAULT":
        return "torchvision-DEFAULT"
    return file_digest(w)


def build_seeded_backbone(cfg: Config) -> Backbone:
    """The configured backbone; a random init (no weights) is seeded by ``cfg.seed``."""
    return build_backbone(cfg.backbone.name, cfg.backbone.weights, preprocess=cfg.backbone.preprocess,
                          seed=cfg.seed).to(cfg.torch_device())


def training_gt(record) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth used for training: difficult objects are left out (py-faster-rcnn default)."""
    keep = ~record.difficult
    return record.boxes[keep], record.labels[keep]


class TrainingContext:
    """What every training stage shares: data, windows, backbone, conv5 cache, pooling."""

    def __init__(self, cfg: Config, progress: bool = True):
        from proposals import compute_split

        self.cfg = cfg
        self.progress = progress
        self.workdir = Path(cfg.workdir)
        self.timings: dict[str, float] = {}
        t = time.perf_counter()
        self.dataset = build_dataset(cfg, cfg.data.train_split)
        self.records = list(self.dataset)
        if cfg.data.max_train_images > 0:
            self.records = self.records[: cfg.data.max_train_images]
        if not self.records:
            raise ValueError(f"{cfg.data.root}: split {cfg.data.train_split!r} has no images")
        self.class_names = tuple(self.dataset.class_names)
        self.timings["load_dataset"] = time.perf_counter() - t

        t = time.perf_counter()
        self.proposals = compute_split(self.records, cfg.proposals, cfg.cache_root() / "proposals",
                                       self.dataset.name, cfg.data.train_split,
                                       workers=cfg.proposals.workers or None, progress=progress)
        self.timings["proposals"] = time.perf_counter() - t

        self.backbone = build_seeded_backbone(cfg)
        self.pool = SpatialPyramidPool(cfg.pool.levels)
        self.weights_id = weights_identity(cfg)
        key = feature_cache_key(cfg.backbone.name, self.weights_id, str(cfg.backbone.preprocess),
                                cfg.features.scales, cfg.features.max_size, cfg.features.cache_dtype)
        self.cache = FeatureCache(cfg.cache_root() / "conv5", key, cfg.features.cache_dtype)
        self.window_cache = (window_feature_cache(cfg.cache_root() / "rcnn_pool5", self.backbone, cfg)
                             if cfg.mode == "rcnn" else None)
        self.data_key = params_digest([r.image_id for r in self.records] + [self.class_names])

        t = time.perf_counter()
        if cfg.mode == "spp":  # R-CNN mode has no per-image maps: it convolves each window's crop
            for r in tqdm(self.records, desc="conv5 cache", disable=not progress, unit="img"):
                cached_feature_maps(self.cache, self.backbone, r, cfg.features.scales,
                                    cfg.features.max_size, read_image)
        self.timings["conv5_cache"] = time.perf_counter() - t

    def windows(self, record) -> np.ndarray:
        return self.proposals.load(record.image_id)

    def pool5(self, record, boxes: np.ndarray) -> torch.Tensor:
        """pool5 vectors [N, D] of ``boxes`` in ``record``'s image (SPP: from the conv5 cache)."""
        if self.window_cache is not None:
            return self.window_cache.pool5(self.backbone, record, boxes, self.pool, self.cfg.rcnn, read_image)
        maps = cached_feature_maps(self.cache, self.backbone, record, self.cfg.features.scales,
                                   self.cfg.features.max_size, read_image)
        return pool_windows(maps, boxes, self.pool, self.backbone.grid, self.cfg.pool.canonical_window,
                            self.cfg.pool.window_margin)

    def feature_cache_bytes(self) -> int:
        """Disk used by this run's features: conv5 maps (SPP) or per-window pool5 (R-CNN)."""
        return (self.window_cache or self.cache).size_bytes()

    def stage_path(self, name: str, *sections) -> Path:
        """Checkpoint path of a stage, keyed by the config sections it depends on."""
        cfg = self.cfg
        key = params_digest({"data": self.data_key, "proposals": asdict(cfg.proposals),
                             "backbone": [cfg.backbone.name, self.weights_id, cfg.backbone.preprocess],
                             "features": asdict(cfg.features), "pool": asdict(cfg.pool),
                             "seed": cfg.seed, "mode": cfg.mode, "rcnn": asdict(cfg.rcnn),
                             "sections": [asdict(s) for s in sections]})
        return self.workdir / "stages" / f"{name}-{key}.pt"


def _save_stage(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_stage(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt checkpoint is recomputed, not fatal
        logger.warning("%s: unreadable stage checkpoint (%s); recomputing", path, e)
        return None


def collect_training_windows(ctx: TrainingContext) -> dict:
    """One pass over the images: pool5 of the fine-tuning and box-regression windows.

    Windows are the proposals plus the ground-truth boxes (R-CNN adds the
    ground truth to its positives).
    """
    cfg = ctx.cfg
    rng = np.random.default_rng(cfg.seed)
    fg, fg_labels, bg = [], [], []
    bb_feats, bb_boxes, bb_gt, bb_labels, bb_iou = [], [], [], [], []
    for r in tqdm(ctx.records, desc="pool training windows", disable=not ctx.progress, unit="img"):
        gt_boxes, gt_labels = training_gt(r)
        windows = np.concatenate([gt_boxes, ctx.windows(r)]).astype(np.float32)
        max_iou, arg = match_windows(windows, gt_boxes)
        if len(gt_boxes) == 0:
            max_iou = np.zeros(len(windows), np.float32)
        label_of_best = gt_labels[arg] if len(gt_boxes) else np.zeros(len(windows), np.int64)
        chosen = label_windows(max_iou, label_of_best, cfg.finetune, cfg.finetune.bank_fg_per_image,
                               cfg.finetune.bank_bg_per_image, rng)
        reg = np.flatnonzero(max_iou >= cfg.bbox.min_iou) if len(gt_boxes) else np.zeros(0, np.int64)
        if len(reg) > cfg.bbox.max_per_image:
            reg = np.sort(rng.choice(reg, cfg.bbox.max_per_image, replace=False))
        wanted = np.unique(np.concatenate([chosen.fg_index, chosen.bg_index, reg]))
        if len(wanted) == 0:
            continue
        pooled = ctx.pool5(r, windows[wanted])
        row = {w: i for i, w in enumerate(wanted.tolist())}
        fg.append(pooled[[row[i] for i in chosen.fg_index.tolist()]].half())
        fg_labels.append(torch.from_numpy(chosen.fg_labels))
        bg.append(pooled[[row[i] for i in chosen.bg_index.tolist()]].half())
        if len(reg):
            bb_feats.append(pooled[[row[i] for i in reg.tolist()]].numpy())
            bb_boxes.append(windows[reg])
            bb_gt.append(gt_boxes[arg[reg]])
            bb_labels.append(gt_labels[arg[reg]])
            bb_iou.append(max_iou[reg])
    dim = ctx.pool.output_dim(ctx.backbone.out_channels)

    def cat(parts, empty):
        return torch.cat(parts) if parts else empty

    def npcat(parts, shape, dtype):
        return np.concatenate(parts) if parts else np.zeros(shape, dtype)

    return {
        "fg": cat(fg, torch.zeros(0, dim, dtype=torch.float16)),
        "fg_labels": cat(fg_labels, torch.zeros(0, dtype=torch.int64)),
        "bg": cat(bg, torch.zeros(0, dim, dtype=torch.float16)),
        "bbox": (npcat(bb_feats, (0, dim), np.float32), npcat(bb_boxes, (0, 4), np.float32),
                 npcat(bb_gt, (0, 4), np.float32), npcat(bb_labels, (0,), np.int64),
                 npcat(bb_iou, (0,), np.float32)),
    }


def svm_training_images(ctx: TrainingContext, head: FCHead) -> Callable[[], Iterable[TrainImage]]:
    """A fresh iterator over the training images' SVM features at each call."""
    layer = ctx.cfg.svm.feature

    def images() -> Iterator[TrainImage]:
        for r in ctx.records:
            windows = ctx.windows(r)
            both = np.concatenate([r.boxes, windows]).astype(np.float32)
            feats = head.features(ctx.pool5(r, both), layer).numpy()
            g = len(r.boxes)
            yield TrainImage(image_id=r.image_id, features=feats[g:], boxes=windows,
                             gt_features=feats[:g], gt_boxes=r.boxes, gt_labels=r.labels,
                             gt_difficult=r.difficult)
    return images


def train(cfg: Config, progress: bool = True) -> Path:
    """Run every training stage and write ``workdir/model.pt``; returns its path."""
    seed_everything(cfg.seed)
    start = time.perf_counter()
    ctx = TrainingContext(cfg, progress)
    stats: dict = {}
    num_classes = len(ctx.class_names)
    dim = ctx.pool.output_dim(ctx.backbone.out_channels)
    head = FCHead(dim, cfg.finetune.hidden, num_classes, cfg.finetune.dropout)

    ft_path = ctx.stage_path("finetune", cfg.finetune)
    bb_path = ctx.stage_path("bbox", cfg.bbox)
    # Each checkpoint is read once; the pooling pass runs only for a stage that must be computed.
    ft_state = _load_stage(ft_path) if cfg.finetune.enabled else None
    bb_state = _load_stage(bb_path) if cfg.bbox.enabled else None
    need_windows = ((cfg.finetune.enabled and ft_state is None)
                    or (cfg.bbox.enabled and bb_state is None))
    bank = None
    if need_windows:
        t = time.perf_counter()
        bank = collect_training_windows(ctx)
        ctx.timings["pool_training_windows"] = time.perf_counter() - t

    t = time.perf_counter()
    if cfg.finetune.enabled:
        state = ft_state
        if state is None:
            ctx.workdir.mkdir(parents=True, exist_ok=True)
            stats["finetune"] = finetune_head(head, bank["fg"], bank["fg_labels"], bank["bg"], cfg.finetune,
                                              cfg.seed, ctx.workdir / "finetune_loss.jsonl", progress,
                                              device=cfg.torch_device())
            _save_stage(ft_path, {"head": head.state_dict(), "stats": stats["finetune"]})
        else:
            head.load_state_dict(state["head"])
            stats["finetune"] = dict(state["stats"], resumed=True)
    elif cfg.svm.feature != "pool5":
        logger.warning("svm.feature=%s without fine-tuning: fc layers are random projections here "
                       "(no ImageNet-trained fc weights exist for this backbone)", cfg.svm.feature)
    head.eval()
    ctx.timings["finetune"] = time.perf_counter() - t

    t = time.perf_counter()
    svm_path = ctx.stage_path("svm", cfg.finetune, cfg.svm)
    state = _load_stage(svm_path)
    if state is None:
        svms, stats["svm"] = train_svms(svm_training_images(ctx, head), num_classes, cfg.svm,
                                        seed=cfg.seed, progress=progress)
        _save_stage(svm_path, {"svms": svms.to_state_dict(), "stats": _plain(stats["svm"])})
    else:
        svms = LinearSVMs.from_state_dict(state["svms"])
        stats["svm"] = {"resumed": True}
    ctx.timings["svm"] = time.perf_counter() - t

    t = time.perf_counter()
    regressors = None
    if cfg.bbox.enabled:
        state = bb_state
        if state is None:
            feats, boxes, gt, labels, ious = bank["bbox"]
            regressors = train_box_regressors(feats, boxes, gt, labels, ious, num_classes, cfg.bbox)
            _save_stage(bb_path, {"regressors": regressors.to_state_dict()})
        else:
            regressors = BoxRegressors.from_state_dict(state["regressors"])
    ctx.timings["bbox"] = time.perf_counter() - t
    ctx.timings["total"] = time.perf_counter() - start

    from proposals import summarize_store

    detector = Detector(cfg, ctx.class_names, ctx.backbone, head, svms, regressors)
    model_path = ctx.workdir / "model.pt"
    extra = {"timings": ctx.timings, "stats": _plain(stats), "versions": collect_versions(),
             "feature_cache_bytes": ctx.feature_cache_bytes(), "train_images": len(ctx.records),
             "windows_per_train_image": summarize_store(
                 ctx.proposals, [r.image_id for r in ctx.records])["windows_per_image"]}
    save_model(model_path, detector, extra=extra)
    with atomic_path(ctx.workdir / "train_report.json") as tmp:
        tmp.write_text(json.dumps({"config": to_dict(cfg), **extra}, indent=2, default=str))
    return model_path


def _plain(obj):
    """Statistics as plain JSON-able values (numpy scalars and arrays converted)."""
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
