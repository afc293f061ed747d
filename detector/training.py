"""Training, one resumable stage after another.

0. every training image checked once (``detector.data.verify``): unreadable
   files are skipped (and reported), size mismatches are errors,
1. proposals (cached per image by ``proposals``),
2. window features: conv5 maps cached per image (SPP) or pool5 per window (R-CNN),
3. a pass that pools the fine-tuning windows and the box-regression windows,
4. fine-tuning fc6/fc7 + a (K+1)-way classifier (conv layers frozen),
5. per-class linear SVMs with hard-negative mining,
6. per-class ridge box regression on pool5,
then one model file. Stages 4-6 save their result under ``workdir/stages``
keyed by the content of the training data (every image's pixels and
annotation) and every parameter the stage reads, so a killed or repeated run
picks up where it stopped, a changed parameter or annotation re-runs only
what it affects, and the log says which stages were reused and why the
others were recomputed.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from proposals.fit import ProposalFit, fit_warning, format_fit, measure_fit

from .bbox_regression import BoxRegressors, train_box_regressors
from .boxes import flip_boxes
from .build import (build_config_backbone, build_dataset, build_detector, build_head,
                    build_window_features, check_weights, seed_everything)
from .config import Config
from .configio import to_dict
from .data import report_dropped_classes
from .data.verify import verify_images
from .evaluation.report import collect_versions
from .fileio import atomic_path, params_digest, write_json_atomic
from .conv_finetune import ConvSample, finetune_with_conv
from .finetune import finetune_head, label_windows
from .heads import FCHead
from .model import save_model
from .pooling import MAPPING_VERSION
from .progress import progress_of
from .records import ImageRecord
from .svm import LinearSVMs, TrainImage, train_svms
from .timing import timed_stage
from .window_features import ImageSource, match_windows

logger = logging.getLogger(__name__)

# Independent random streams (seeded by cfg.seed), so the fine-tuning bank
# does not change when a box-regression parameter changes the number of draws.
_FINETUNE_STREAM, _BBOX_STREAM, _SCALE_STREAM = 1, 2, 3


def training_gt(record) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth used for training: difficult objects are left out (py-faster-rcnn default)."""
    keep = ~record.difficult
    return record.boxes[keep], record.labels[keep]


# Image id suffix of a training image's left-right mirror (data.flip).
FLIP_SUFFIX = "#flip"


def flipped_record(record: ImageRecord) -> ImageRecord:
    """The record of ``record``'s image mirrored left-right: same file, mirrored boxes."""
    boxes = flip_boxes(record.boxes, record.width).numpy().astype(np.float32)
    return dataclasses.replace(record, image_id=record.image_id + FLIP_SUFFIX, boxes=boxes)


def is_flipped(record) -> bool:
    return record.image_id.endswith(FLIP_SUFFIX)


def annotation_digest(record) -> str:
    """Digest of what training reads from an annotation: boxes, labels, difficult flags."""
    return params_digest([record.image_id, np.round(record.boxes.astype(np.float64), 3).tolist(),
                          record.labels.tolist(), record.difficult.tolist()])


@dataclass(frozen=True)
class TrainingWindows:
    """pool5 of the windows the fc layers and the box regressors train on.

    fg/bg: float16 [F, D] / [B, D] fine-tuning positives and background;
    fg_labels: int64 [F] class index + 1. bbox_*: the regression windows,
    float32 features [R, D], windows [R, 4], their best gt boxes [R, 4],
    int64 labels [R] and float32 IoU [R].
    """

    fg: torch.Tensor
    fg_labels: torch.Tensor
    bg: torch.Tensor
    bbox_features: np.ndarray
    bbox_boxes: np.ndarray
    bbox_gt: np.ndarray
    bbox_labels: np.ndarray
    bbox_iou: np.ndarray


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` produced and how long each stage took."""

    model_path: Path
    report_path: Path
    timings: dict[str, float]
    stats: dict
    train_images: int
    skipped_images: list[dict] = field(default_factory=list)
    reused_stages: list[str] = field(default_factory=list)
    stage_paths: dict[str, Path] = field(default_factory=dict)
    feature_cache_bytes: int = 0
    windows_per_train_image: float = 0.0
    proposal_fit: dict = field(default_factory=dict)  # proposals.fit.ProposalFit.as_dict()
    # class name -> the stages that learned nothing for it (see classes_without_training_objects)
    classes_without_training_objects: dict[str, list[str]] = field(default_factory=dict)


class Stage:
    """One checkpointed stage: its file is named by the digest of everything it depends on.

    A small ``<name>.last.json`` beside it remembers the inputs of the last
    run, so a recomputation can say what changed.
    """

    def __init__(self, stages_dir: Path, name: str, parts: dict):
        self.name = name
        self.parts = parts
        self.path = stages_dir / f"{name}-{params_digest(parts)}.pt"
        self._last = stages_dir / f"{name}.last.json"

    def load(self) -> dict | None:
        if not self.path.exists():
            logger.info("stage %s: computing (%s)", self.name, self._why())
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:  # a corrupt checkpoint is recomputed, not fatal
            logger.warning("%s: unreadable stage checkpoint (%s); recomputing", self.path, e)
            return None
        logger.info("stage %s: reused %s (same data and parameters)", self.name, self.path.name)
        return state

    def save(self, state: dict) -> None:
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)
        write_json_atomic(self._last, self.parts)

    def _why(self) -> str:
        try:
            last = json.loads(self._last.read_text())
        except (OSError, ValueError):
            return "no earlier run in this workdir"
        return describe_changes(last, json.loads(json.dumps(self.parts, default=str)))


def describe_changes(old: dict, new: dict) -> str:
    """What differs between two stage inputs, in a few words."""
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if key == "data" and isinstance(a, dict) and isinstance(b, dict):
            ia, ib = a.get("images", {}), b.get("images", {})

            def images(keys):  # an image and its mirror count once
                return len({k.removesuffix(FLIP_SUFFIX) for k in keys})
            changed = images(k for k in ia if k in ib and ia[k] != ib[k])
            added, removed = images(set(ib) - set(ia)), images(set(ia) - set(ib))
            bits = [f"{n} {what}" for n, what in ((changed, "changed"), (added, "added"),
                                                   (removed, "removed")) if n]
            if a.get("classes") != b.get("classes"):
                bits.append("class names")
            changes.append("training data: " + (", ".join(bits) or "changed") + " image(s)")
        elif isinstance(a, dict) and isinstance(b, dict):
            fields = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            changes.append(", ".join(f"{key}.{f}" for f in fields))
        else:
            changes.append(key)
    return "changed: " + "; ".join(changes) if changes else "checkpoint missing"


class TrainingContext:
    """What every training stage shares: verified data, windows, window features."""

    def __init__(self, cfg: Config, progress: bool = True, backend=None):
        from proposals import compute_split
        from proposals.store import cache_params

        self.cfg = cfg
        self.progress = progress
        self.backend = backend
        self.workdir = Path(cfg.workdir)
        self.timings: dict[str, float] = {}
        check_weights(cfg.backbone)  # a wrong path fails now, not after the proposals
        with timed_stage(self.timings, "load_dataset"):
            dataset = build_dataset(cfg.data, cfg.data.train_split)
            report_dropped_classes(dataset, cfg.data.root, "data.class_names")  # COCO leaves them out
            records = list(dataset)
            if cfg.data.max_train_images > 0:
                records = records[: cfg.data.max_train_images]
            if not records:
                raise ValueError(f"{cfg.data.root}: split {cfg.data.train_split!r} has no images")
            if not any(len(r.boxes) for r in records):
                raise ValueError(f"{cfg.data.root}: split {cfg.data.train_split!r} has no objects "
                                 f"to train on ({len(records)} images, none annotated)")
            self.verified = verify_images(records, cfg.cache_root() / "image_checks.json",
                                          strict=cfg.data.strict_images, progress=progress,
                                          what=f"{cfg.data.root} {cfg.data.train_split} split")
        originals = list(self.verified.records)
        # With data.flip every image also trains as its mirror: same file and
        # digest, mirrored boxes and windows, its own conv5 cache entry.
        self.records = originals + ([flipped_record(r) for r in originals] if cfg.data.flip else [])
        self.num_images = len(originals)
        self.class_names = tuple(dataset.class_names)
        self.images = {r.image_id: ImageSource.from_record(r, self.digest(r), flip=is_flipped(r))
                       for r in self.records}

        with timed_stage(self.timings, "proposals"):
            self.proposals = compute_split(originals, cfg.proposals, cfg.cache_root() / "proposals",
                                           dataset.name, cfg.data.train_split,
                                           workers=cfg.proposals.workers or None, progress=progress,
                                           backend=backend)
            self.proposal_fit = check_proposal_fit(originals, self.proposals, self.class_names, cfg)

        self.backbone = build_config_backbone(cfg)
        self.features = build_window_features(cfg, self.backbone, cfg.cache_root())
        with timed_stage(self.timings, "conv5_cache"):
            self.features.prepare(list(self.images.values()), progress, backend)

        windows = ({"mode": "rcnn", "rcnn": asdict(cfg.rcnn)} if cfg.mode == "rcnn" else
                   {"mode": "spp", "features": asdict(cfg.features)})
        self.common_parts = {
            "data": {"classes": list(self.class_names),
                     "images": {r.image_id: params_digest([annotation_digest(r), self.digest(r)])
                                for r in self.records}},
            "proposals": cache_params(cfg.proposals),
            "backbone": self.backbone.digest(),
            # The cell grid and the mapping rule's version: a changed mapping
            # changes every pooled vector, though no parameter changed.
            "windows": dict(windows, pool=asdict(cfg.pool), grid=asdict(self.backbone.grid),
                            mapping=MAPPING_VERSION),
            "seed": cfg.seed,
        }

    def adopt_trunk(self, state: dict) -> None:
        """Load fine-tuned conv weights into the backbone and fill their conv5 cache."""
        self.backbone.load_state_dict(state)
        self.features = build_window_features(self.cfg, self.backbone, self.cfg.cache_root())
        self.features.prepare(list(self.images.values()), self.progress, self.backend)

    def digest(self, record) -> str:
        """Content digest of a record's image file (a mirror shares its original's)."""
        return self.verified.digests[record.image_id.removesuffix(FLIP_SUFFIX)]

    def windows(self, record) -> np.ndarray:
        """The record's proposals (a mirror's are its original's, mirrored)."""
        if is_flipped(record):
            boxes = self.proposals.load(record.image_id.removesuffix(FLIP_SUFFIX))
            return flip_boxes(boxes, record.width).numpy().astype(np.float32)
        return self.proposals.load(record.image_id)

    def pool5(self, record, boxes: np.ndarray, scale_rng: np.random.Generator | None = None) -> torch.Tensor:
        """pool5 vectors [N, D] of ``boxes`` in ``record``'s image (``scale_rng``: random scales)."""
        return self.features.pool5(self.images[record.image_id], boxes, scale_rng=scale_rng)

    def stage(self, name: str, **sections) -> Stage:
        """The checkpoint of stage ``name``, keyed by the data, the windows and ``sections``."""
        parts = dict(self.common_parts, **{k: self._section_key(k, v) for k, v in sections.items()})
        return Stage(self.workdir / "stages", name, parts)

    def _section_key(self, name: str, section) -> dict:
        """A config section as a stage key. The memory budgets key a stage by what they do:
        the per-image caps they leave, and only where they bind (so a budget that changes
        nothing keeps the stage, as it was before budgets existed)."""
        key = asdict(section)
        n, dim = len(self.records), self.features.output_dim
        if name == "finetune":
            del key["bank_max_mb"]
            caps = bank_caps(self.cfg, n, dim)
            if caps != (section.bank_fg_per_image, section.bank_bg_per_image):
                key["bank_caps"] = list(caps)
        elif name == "bbox":
            del key["max_mb"]
            cap = bbox_cap(self.cfg, n, dim)
            if cap != section.max_per_image:
                key["bbox_cap"] = cap
        return key


def labelled_windows(ctx: TrainingContext, record, rng: np.random.Generator, caps: tuple[int, int] | None = None):
    """A training image's windows (its ground truth, then its proposals), each window's best
    IoU and gt index, and the fine-tuning sample drawn from them (at most ``caps``: default the
    bank's, :func:`bank_caps`).

    Returns (windows float32 [N, 4], max_iou [N], argmax [N], WindowLabels).
    """
    cfg = ctx.cfg
    gt_boxes, gt_labels = training_gt(record)
    windows = np.concatenate([gt_boxes, ctx.windows(record)]).astype(np.float32)
    max_iou, arg = match_windows(windows, gt_boxes)
    label_of_best = gt_labels[arg] if len(gt_boxes) else np.zeros(len(windows), np.int64)
    max_fg, max_bg = caps or bank_caps(cfg, len(ctx.records), ctx.features.output_dim)
    chosen = label_windows(max_iou, label_of_best, cfg.finetune, max_fg, max_bg, rng)
    return windows, max_iou, arg, chosen


MB = 1 << 20


def bank_caps(cfg: Config, num_images: int, dim: int) -> tuple[int, int]:
    """Fine-tuning windows kept per image (fg, bg): the config's per-image caps, shrunk in
    proportion when ``num_images`` of them would pass ``finetune.bank_max_mb`` (float16 pool5)."""
    fg, bg = cfg.finetune.bank_fg_per_image, cfg.finetune.bank_bg_per_image
    fit = cfg.finetune.bank_max_mb * MB / (2 * dim * max(num_images, 1))
    if fg + bg > fit:
        shrink = fit / (fg + bg)
        fg, bg = max(1, int(fg * shrink)), max(1, int(bg * shrink))
    return fg, bg


def bbox_cap(cfg: Config, num_images: int, dim: int) -> int:
    """Box-regression windows kept per image: ``bbox.max_per_image``, or fewer when
    ``num_images`` of them would pass ``bbox.max_mb`` (float32 pool5)."""
    fit = int(cfg.bbox.max_mb * MB / (4 * dim * max(num_images, 1)))
    return max(1, min(cfg.bbox.max_per_image, fit))


def collect_training_windows(ctx: TrainingContext, draw: int = 0, bbox: bool = True) -> TrainingWindows:
    """One pass over the images: pool5 of the fine-tuning and box-regression windows.

    Windows are the proposals plus the ground-truth boxes (R-CNN adds the
    ground truth to its positives). ``draw`` numbers the fine-tuning bank
    (each draw samples other windows, see ``finetune.resample_every``);
    ``bbox=False`` leaves the box-regression windows out.
    """
    cfg = ctx.cfg
    ft_rng = np.random.default_rng([cfg.seed, _FINETUNE_STREAM, draw])
    bb_rng = np.random.default_rng([cfg.seed, _BBOX_STREAM])
    # Random scales need their own pooling pass; with one scale there is no choice to make.
    several = cfg.mode == "spp" and len(cfg.features.scales) > 1 and cfg.finetune.random_scale
    scale_rng = np.random.default_rng([cfg.seed, _SCALE_STREAM, draw]) if several else None
    max_reg = bbox_cap(cfg, len(ctx.records), ctx.features.output_dim)
    fg, fg_labels, bg = [], [], []
    bb_feats, bb_boxes, bb_gt, bb_labels, bb_iou = [], [], [], [], []
    for r in progress_of(ctx.records, desc="pool training windows", unit="img", enabled=ctx.progress):
        gt_boxes, gt_labels = training_gt(r)
        windows, max_iou, arg, chosen = labelled_windows(ctx, r, ft_rng)
        reg = (np.flatnonzero(max_iou >= cfg.bbox.min_iou) if len(gt_boxes) and bbox
               else np.zeros(0, np.int64))
        if len(reg) > max_reg:
            reg = np.sort(bb_rng.choice(reg, max_reg, replace=False))
        ft_wanted = np.unique(np.concatenate([chosen.fg_index, chosen.bg_index]))
        if len(ft_wanted) + len(reg) == 0:
            continue
        if scale_rng is None:  # one pooling pass, every window at its selected scale
            wanted = np.unique(np.concatenate([ft_wanted, reg]))
            ft_pool = reg_pool = (wanted, ctx.pool5(r, windows[wanted]))
        else:  # fine-tuning windows at random scales, regression windows at the selected one
            ft_pool = (ft_wanted, ctx.pool5(r, windows[ft_wanted], scale_rng))
            reg_pool = (reg, ctx.pool5(r, windows[reg]))
        fg.append(_rows(ft_pool, chosen.fg_index).half())
        fg_labels.append(torch.from_numpy(chosen.fg_labels))
        bg.append(_rows(ft_pool, chosen.bg_index).half())
        if len(reg):
            bb_feats.append(_rows(reg_pool, reg).numpy())
            bb_boxes.append(windows[reg])
            bb_gt.append(gt_boxes[arg[reg]])
            bb_labels.append(gt_labels[arg[reg]])
            bb_iou.append(max_iou[reg])
    dim = ctx.features.output_dim

    def cat(parts, empty):
        return torch.cat(parts) if parts else empty

    def npcat(parts, shape, dtype):
        return np.concatenate(parts) if parts else np.zeros(shape, dtype)

    return TrainingWindows(
        fg=cat(fg, torch.zeros(0, dim, dtype=torch.float16)),
        fg_labels=cat(fg_labels, torch.zeros(0, dtype=torch.int64)),
        bg=cat(bg, torch.zeros(0, dim, dtype=torch.float16)),
        bbox_features=npcat(bb_feats, (0, dim), np.float32), bbox_boxes=npcat(bb_boxes, (0, 4), np.float32),
        bbox_gt=npcat(bb_gt, (0, 4), np.float32), bbox_labels=npcat(bb_labels, (0,), np.int64),
        bbox_iou=npcat(bb_iou, (0,), np.float32))


def conv_samples(ctx: TrainingContext) -> list[ConvSample]:
    """Every training image with its labelled windows, for conv fine-tuning (at most the
    bank's fg + bg windows per image, sampled once)."""
    cfg = ctx.cfg
    rng = np.random.default_rng([cfg.seed, _FINETUNE_STREAM])
    samples = []
    # Boxes only, no pool5 bank to budget: the configured per-image caps.
    caps = (cfg.finetune.bank_fg_per_image, cfg.finetune.bank_bg_per_image)
    for r in ctx.records:
        windows, _, _, labels = labelled_windows(ctx, r, rng, caps)
        samples.append(ConvSample(ctx.images[r.image_id], windows, labels))
    return samples


def _rows(pool: tuple[np.ndarray, torch.Tensor], index: np.ndarray) -> torch.Tensor:
    """Rows of pooled vectors for window ``index`` (pool: sorted window indices, their vectors)."""
    wanted, pooled = pool
    return pooled[torch.from_numpy(np.searchsorted(wanted, index))]


def classes_without_training_objects(records, class_names, stages: list[str]) -> dict[str, list[str]]:
    """The classes with no (non-difficult) object in ``records``, each with ``stages``: the
    stages that then learn nothing for it (no positive for the SVM, no window for the box
    regressor or the fine-tuned classifier), so it is never detected."""
    counts = np.zeros(len(class_names), np.int64)
    for r in records:
        counts += np.bincount(training_gt(r)[1], minlength=len(class_names))
    return {class_names[k]: list(stages) for k in np.flatnonzero(counts == 0)}


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


def check_proposal_fit(records: list[ImageRecord], store, class_names, cfg: Config) -> ProposalFit:
    """Recall of the training windows on the training split, logged; a warning below proposals.min_recall."""
    fit = measure_fit(records, store.load, class_names, cfg.data.train_split, cfg.proposals.min_size)
    logger.info("%s", format_fit(fit))
    warning = fit_warning(fit, cfg.proposals)
    if warning:
        logger.warning("%s", warning)
    return fit


def train(cfg: Config, progress: bool = True, backend=None) -> TrainResult:
    """Run every training stage and write ``workdir/model.pt`` and ``train_report.json``.

    ``backend``: a ``detector.ray_backend.RayBackend`` to run the proposal and
    conv5-cache stages on (None: this machine); the caches are the same either way.
    """
    seed_everything(cfg.seed)
    start = time.perf_counter()
    ctx = TrainingContext(cfg, progress, backend)
    timings = ctx.timings
    stats: dict = {}
    reused: list[str] = []
    num_classes = len(ctx.class_names)
    head = build_head(cfg, ctx.features.output_dim, num_classes)

    # With conv fine-tuning every later feature comes from the fine-tuned trunk.
    conv = cfg.finetune.enabled and cfg.finetune.conv_layers > 0
    ft_stage = ctx.stage("finetune", finetune=cfg.finetune)
    bb_stage = ctx.stage("bbox", bbox=cfg.bbox) if not conv else ctx.stage("bbox", finetune=cfg.finetune,
                                                                            bbox=cfg.bbox)
    # SVMs on pool5 of a frozen trunk do not read the fc layers, so fine-tuning does not key them.
    svm_stage = (ctx.stage("svm", svm=cfg.svm) if (cfg.svm.feature == "pool5" and not conv)
                 or not cfg.finetune.enabled else ctx.stage("svm", finetune=cfg.finetune, svm=cfg.svm))
    # Each checkpoint is read once; the pooling pass runs only for a stage that must be computed.
    ft_state = ft_stage.load() if cfg.finetune.enabled else None
    bb_state = bb_stage.load() if cfg.bbox.enabled else None
    bank = None
    if (cfg.finetune.enabled and ft_state is None and not conv) or (cfg.bbox.enabled and bb_state is None
                                                                    and not conv):
        with timed_stage(timings, "pool_training_windows"):
            bank = collect_training_windows(ctx)

    with timed_stage(timings, "finetune"):
        if cfg.finetune.enabled:
            if ft_state is None:
                ctx.workdir.mkdir(parents=True, exist_ok=True)
                if conv:
                    stats["finetune"] = finetune_with_conv(head, ctx.features, conv_samples(ctx), cfg.finetune,
                                                           cfg.seed, ctx.workdir / "finetune_loss.jsonl", progress)
                    ft_state = {"head": head.state_dict(), "trunk": ctx.backbone.state_dict(),
                                "stats": stats["finetune"]}
                else:
                    def redraw(draw: int):
                        new = collect_training_windows(ctx, draw, bbox=False)
                        return new.fg, new.fg_labels, new.bg

                    stats["finetune"] = finetune_head(head, bank.fg, bank.fg_labels, bank.bg, cfg.finetune,
                                                      cfg.seed, ctx.workdir / "finetune_loss.jsonl", progress,
                                                      device=cfg.torch_device(), resample=redraw)
                    ft_state = {"head": head.state_dict(), "stats": stats["finetune"]}
                ft_stage.save(ft_state)
            else:
                head.load_state_dict(ft_state["head"])
                stats["finetune"] = dict(ft_state["stats"], resumed=True)
                reused.append("finetune")
        elif cfg.svm.feature != "pool5":
            logger.warning("svm.feature=%s without fine-tuning: fc layers are random projections here "
                           "(no ImageNet-trained fc weights exist for this backbone)", cfg.svm.feature)
        head.eval()
    if bank is not None:  # the fine-tuning windows are done with: free them before the SVMs
        empty = torch.zeros(0, bank.fg.shape[1], dtype=bank.fg.dtype)
        bank = dataclasses.replace(bank, fg=empty, fg_labels=bank.fg_labels[:0].clone(), bg=empty)
    if conv:  # the fine-tuned trunk: its own conv5 cache (keyed by its weights), then the rest
        with timed_stage(timings, "conv5_cache_finetuned"):
            ctx.adopt_trunk(ft_state["trunk"])
        if cfg.bbox.enabled and bb_state is None:
            with timed_stage(timings, "pool_training_windows"):
                bank = collect_training_windows(ctx)

    with timed_stage(timings, "svm"):
        state = svm_stage.load()
        if state is None:
            svms, svm_stats = train_svms(svm_training_images(ctx, head), num_classes, cfg.svm,
                                         seed=cfg.seed, progress=progress, class_names=ctx.class_names)
            stats["svm"] = _plain(svm_stats)
            svm_stage.save({"svms": svms.to_state_dict(), "stats": stats["svm"]})
        else:
            svms = LinearSVMs.from_state_dict(state["svms"])
            stats["svm"] = {"resumed": True}
            reused.append("svm")

    regressors = None
    with timed_stage(timings, "bbox"):
        if cfg.bbox.enabled:
            if bb_state is None:
                regressors = train_box_regressors(bank.bbox_features, bank.bbox_boxes, bank.bbox_gt,
                                                  bank.bbox_labels, bank.bbox_iou, num_classes, cfg.bbox,
                                                  target_norm=cfg.svm.target_norm,
                                                  class_names=ctx.class_names)
                bb_stage.save({"regressors": regressors.to_state_dict()})
            else:
                regressors = BoxRegressors.from_state_dict(bb_state["regressors"])
                reused.append("bbox")
    timings["total"] = time.perf_counter() - start

    from proposals import summarize_store

    detector = build_detector(cfg, ctx.class_names, ctx.backbone, head, svms, regressors)
    stages = [name for name, on in (("finetune", cfg.finetune.enabled), ("svm", True),
                                    ("bbox", cfg.bbox.enabled)) if on]
    result = TrainResult(
        model_path=ctx.workdir / "model.pt", report_path=ctx.workdir / "train_report.json",
        timings=dict(timings), stats=_plain(stats), train_images=ctx.num_images,
        skipped_images=ctx.verified.bad_as_dicts(), reused_stages=reused,
        stage_paths={s.name: s.path for s in (ft_stage, svm_stage, bb_stage)},
        feature_cache_bytes=ctx.features.cache_bytes(),
        windows_per_train_image=summarize_store(
            ctx.proposals, [r.image_id for r in ctx.verified.records])["windows_per_image"],
        classes_without_training_objects=classes_without_training_objects(
            ctx.verified.records, ctx.class_names, stages),
        proposal_fit=ctx.proposal_fit.as_dict())
    extra = {"timings": result.timings, "stats": result.stats, "versions": collect_versions(),
             "feature_cache_bytes": result.feature_cache_bytes, "train_images": result.train_images,
             "flipped_images": cfg.data.flip,
             "skipped_images": result.skipped_images, "reused_stages": reused,
             "windows_per_train_image": result.windows_per_train_image,
             "proposal_recall": result.proposal_fit,
             "classes_without_training_objects": result.classes_without_training_objects}
    save_model(result.model_path, detector, extra=extra)
    write_json_atomic(result.report_path, _plain({"config": to_dict(cfg), **extra}))
    return result


def _plain(obj):
    """Statistics as plain JSON-able values (numpy scalars and arrays converted)."""
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
