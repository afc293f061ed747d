"""Training as a list of declared stages (``training_stages``), run by ``detector.training.stages``.

0. every training image checked once (``detector.data.verify``): unreadable
   files are skipped (and reported), size mismatches are errors,
1. proposals (cached per image by ``proposals``),
2. window features: conv5 maps cached per image (SPP) or pool5 per window (R-CNN),
3. fine-tuning: fc6/fc7 + a (K+1)-way classifier on pooled windows (conv
   layers frozen), or with ``finetune.conv_layers`` the last conv blocks too,
4. with conv fine-tuning, the fine-tuned trunk's conv5 cache (stage 2 is then left
   out: conv fine-tuning reads no pre-trained conv5 map),
5. per-class linear SVMs with hard-negative mining,
6. per-class ridge box regression on pool5,
then one model file. This module is also training's builder: :func:`train` is where
the config is read, into the settings every stage shares (:func:`training_settings`)
and each stage's own sections (a stage reads nothing it did not declare). Stages 3, 5 and 6 save their result under
``workdir/stages`` keyed by the content of the training data (every image's
pixels and annotation) and every parameter the stage reads, so a killed or
repeated run picks up where it stopped, a changed parameter or annotation
re-runs only what it affects, and the log says which stages were reused and
why the others were recomputed. Fine-tuning (``finetune.sampler=stream``,
the default) and box regression pool their windows from the conv5 cache as
they go, a mini-batch or an image at a time; the bank sampler's pooled
windows are pooled only when its stage must be computed.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .bbox_regression import BoxRegressors
from .bbox_stream import train_box_regressors_streamed
from ..build import (build_config_backbone, build_detector, build_head, build_window_features, check_weights,
                     multi_scale, seed_everything, window_features_key)
from ..config import Config
from ..configio import to_dict
from .conv_finetune import finetune_with_conv
from ..evaluation.report import collect_versions
from ..fileio import write_json_atomic
from .fc_finetune import finetune_head
from ..heads import FCHead
from ..model import save_model
from .stages import FINETUNE_WINDOWS, Checkpoint, StageConfig, TrainingStage, run_stages
from .stream_finetune import finetune_streamed
from .svm import LinearSVMs, train_svms
from ..timing import timed_stage
from .context import (SharedSettings, TrainingContext, TrainingWindows, bank_use,
                      classes_without_training_objects, collect_training_windows, conv_samples, random_window_norm,
                      regression_windows, section_key, streamed_windows, svm_features, svm_training_images)
from .validation import held_out_snapshot

logger = logging.getLogger(__name__)


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


@dataclass
class TrainingRun:
    """One training run: the shared context, and each stage's result as it comes
    (the ``detector.training.stages.StageHost`` the runner drives)."""

    ctx: TrainingContext
    head: FCHead  # random until a fine-tuning stage trains or restores it
    sections: dict  # the stages' own config sections by name (finetune, svm, bbox); each gets only its own
    stats: dict = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)
    trunk: dict | None = None  # fine-tuned conv weights (conv fine-tuning)
    windows: TrainingWindows | None = None  # pooled on the current trunk, while a stage wants them
    svms: LinearSVMs | None = None
    regressors: BoxRegressors | None = None

    @property
    def timings(self) -> dict[str, float]:
        return self.ctx.timings

    def config_of(self, stage: TrainingStage) -> StageConfig:
        return StageConfig(stage.name, {name: self.sections[name] for name in stage.sections},
                           borrowed_values(self.sections, stage.borrows))

    def checkpoint(self, name: str, sections: Sequence[str], borrows: Sequence[str]) -> Checkpoint:
        return self.ctx.checkpoint(name, {s: self.sections[s] for s in sections},
                                   borrowed_values(self.sections, borrows))

    def pool_windows(self, parts: set[str]) -> None:
        # the one part: the fine-tuning bank, which only FINETUNE_FC reads
        self.windows = collect_training_windows(self.ctx, self.sections["finetune"])

    def release_windows(self, parts: set[str]) -> None:
        for part in parts:
            self.windows = self.windows.without(part)


# -- the stages: each computes its result, or restores it from its checkpoint ------------------

def propose(run: TrainingRun, config: StageConfig) -> None:
    run.ctx.propose()


def cache_conv5(run: TrainingRun, config: StageConfig) -> None:
    run.ctx.cache_conv5()


def finetune_fc(run: TrainingRun, config: StageConfig) -> dict:
    """fc fine-tuning on the bank of pooled windows (re-drawn every ``finetune.resample_every``)."""
    ctx, bank, finetune = run.ctx, run.windows, config.finetune
    banks = [(bank.fg_keys, bank.bg_keys)]

    def redraw(draw: int):
        new = collect_training_windows(ctx, finetune, draw)
        banks.append((new.fg_keys, new.bg_keys))
        return new.fg, new.fg_labels, new.bg

    ctx.workdir.mkdir(parents=True, exist_ok=True)
    stats = finetune_head(run.head, bank.fg, bank.fg_labels, bank.bg, finetune, ctx.settings.seed,
                          ctx.workdir / "finetune_loss.jsonl", ctx.progress, device=ctx.settings.device,
                          resample=redraw, validation=fc_validation(run, finetune))
    taken = [np.concatenate([fg_keys[fg], bg_keys[bg]])
             for (fg_keys, bg_keys), (fg, bg) in zip(banks, stats.pop("used_rows"))]
    run.stats["finetune"] = dict(stats, sampler="bank", **bank_use(np.concatenate(taken), bank.eligible).as_dict())
    return {"head": run.head.state_dict(), "stats": run.stats["finetune"]}


def finetune_fc_streamed(run: TrainingRun, config: StageConfig) -> dict:
    """fc fine-tuning on image-centric mini-batches pooled from the conv5 cache as it goes."""
    ctx, finetune = run.ctx, config.finetune
    sampler, pool = streamed_windows(ctx, finetune)
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    stats = finetune_streamed(run.head, sampler, pool, finetune, ctx.settings.seed,
                              ctx.workdir / "finetune_loss.jsonl", ctx.progress, device=ctx.settings.device,
                              validation=fc_validation(run, finetune))
    run.stats["finetune"] = dict(stats, sampler="stream")
    return {"head": run.head.state_dict(), "stats": run.stats["finetune"]}


def fc_validation(run: TrainingRun, finetune):
    """fc fine-tuning's ``BestSnapshot`` of the head on the held-out windows, pooled once
    (the trunk is frozen); None without ``data.val_split``."""
    ctx = run.ctx
    held = ctx.validation_samples(finetune)
    return held_out_snapshot(held, ctx.features.pool5, {"head": run.head}, finetune.val_every,
                             ctx.settings.data.val_split, pool_once=True) if held else None


def finetune_conv(run: TrainingRun, config: StageConfig) -> dict:
    """fc and the last conv blocks fine-tuned together through the pyramid."""
    ctx, finetune, settings = run.ctx, config.finetune, run.ctx.settings
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    samples, held, features = conv_samples(ctx, finetune), ctx.validation_samples(finetune), ctx.features
    if finetune.prefix_cache:
        features = features.with_frozen_prefix(finetune.conv_layers, settings.cache_root)
        with timed_stage(ctx.timings, "frozen_prefix_cache"):
            features.prefix.prepare([s.image for s in samples + held], ctx.progress)
    validation = held_out_snapshot(held, features.current_pool5, {"head": run.head, "trunk": ctx.backbone},
                                   finetune.val_every, settings.data.val_split, pool_once=False) if held else None
    stats = finetune_with_conv(run.head, features, samples, finetune, settings.seed,
                               ctx.workdir / "finetune_loss.jsonl", ctx.progress, validation)
    run.stats["finetune"] = dict(stats, sampler=finetune.sampler)  # with the windows drawn of those eligible
    run.trunk = ctx.backbone.state_dict()
    return {"head": run.head.state_dict(), "trunk": run.trunk, "stats": run.stats["finetune"]}


def restore_finetune(run: TrainingRun, state: dict) -> None:
    run.head.load_state_dict(state["head"])
    run.trunk = state.get("trunk")
    run.stats["finetune"] = dict(state["stats"], resumed=True)


def adopt_finetuned_trunk(run: TrainingRun, config: StageConfig) -> None:
    """Every later feature comes from the fine-tuned trunk: its own conv5 cache (keyed by its
    weights), from the frozen prefix's cache when fine-tuning kept one (finetune.prefix_cache)."""
    finetune = config.finetune
    run.ctx.adopt_trunk(run.trunk, finetune.conv_layers if finetune.prefix_cache else 0)


def train_svm_stage(run: TrainingRun, config: StageConfig) -> dict:
    ctx, svm = run.ctx, config.svm
    # svm.norm_windows=random: the mean norm from random windows (the official rule), so the
    # collect pass computes the features of the rows it keeps only (not with neg_dedup=identical,
    # which compares every window's features).
    mean_norm = (random_window_norm(ctx, "svm", svm_features(run.head, svm.feature))
                 if svm.norm_windows == "random" else None)
    if svm.norm_windows == "random" and mean_norm is None:
        logger.warning("svm.norm_windows=random: the sampled images have no window; the SVMs' mean "
                       "norm is taken over every window instead")
    images = svm_training_images(ctx, run.head, svm.feature, svm.replay_mb,
                                 lazy=mean_norm is not None and svm.neg_dedup != "identical")
    run.svms, svm_stats = train_svms(images, len(ctx.class_names), svm, seed=ctx.settings.seed,
                                     progress=ctx.progress, class_names=ctx.class_names, mean_norm=mean_norm)
    run.stats["svm"] = dict(_plain(svm_stats), replayed_images=images.replayed)
    return {"svms": run.svms.to_state_dict(), "stats": run.stats["svm"]}


def restore_svms(run: TrainingRun, state: dict) -> None:
    run.svms = LinearSVMs.from_state_dict(state["svms"])
    run.stats["svm"] = {"resumed": True}


def train_bbox_stage(run: TrainingRun, config: StageConfig) -> dict:
    """Box regression on every window over ``bbox.min_iou`` (or ``bbox.max_per_image`` of
    each image's), streamed image by image; bbox.norm_windows=random scales the features
    by random windows' mean norm instead of the regression windows'. The features are
    scaled to the SVMs' ``svm.target_norm`` (borrowed: the one field of that section read)."""
    ctx, bbox = run.ctx, config.bbox
    target_norm = config.svm.target_norm
    norm = random_window_norm(ctx) if bbox.norm_windows == "random" else None
    run.regressors, use = train_box_regressors_streamed(
        lambda classes: regression_windows(ctx, bbox, classes), len(ctx.class_names), ctx.features.output_dim,
        bbox, target_norm=target_norm, class_names=ctx.class_names,
        feature_scale=target_norm / norm if norm else None)
    run.stats["bbox"] = use.as_dict()
    return {"regressors": run.regressors.to_state_dict(), "stats": run.stats["bbox"]}


def restore_bbox(run: TrainingRun, state: dict) -> None:
    run.regressors = BoxRegressors.from_state_dict(state["regressors"])
    run.stats["bbox"] = dict(state.get("stats", {}), resumed=True)


# Every stage after the conv5 cache reads the proposals' pooled windows, so every
# checkpoint's key holds the data, proposal, trunk and window parts
# (``training_windows.shared_parts``); the sections below come on top.
PROPOSALS = TrainingStage("proposals", propose, makes=("proposals",))
CONV5_CACHE = TrainingStage("conv5_cache", cache_conv5, makes=("conv5",))
FINETUNE_FC = TrainingStage("finetune", finetune_fc, sections=("finetune",), reads=("proposals", "conv5"),
                            makes=("head",), restore=restore_finetune, pooled=FINETUNE_WINDOWS)
# The default sampler: no pooled bank, mini-batches pooled as training goes.
FINETUNE_STREAM = dataclasses.replace(FINETUNE_FC, run=finetune_fc_streamed, pooled=None)
FINETUNE_CONV = TrainingStage("finetune", finetune_conv, sections=("finetune",), reads=("proposals",),
                              makes=("head", "trunk"), restore=restore_finetune)
FINETUNED_TRUNK = TrainingStage("conv5_cache_finetuned", adopt_finetuned_trunk, sections=("finetune",),
                                reads=("trunk",), makes=("conv5",))
# SVMs on pool5 do not read the fc layers: fine-tuning keys them only through the trunk.
SVMS_ON_POOL5 = TrainingStage("svm", train_svm_stage, sections=("svm",), reads=("proposals", "conv5"),
                              makes=("svms",), restore=restore_svms)
SVMS_ON_FC = dataclasses.replace(SVMS_ON_POOL5, reads=SVMS_ON_POOL5.reads + ("head",))
# Box regression scales its features to the SVMs' target norm: a borrowed field, keyed only
# off its default (every workdir from before keeps its box regression).
BOX_REGRESSION = TrainingStage("bbox", train_bbox_stage, sections=("bbox",), reads=("proposals", "conv5"),
                               makes=("regressors",), restore=restore_bbox, borrows=("svm.target_norm",))


def training_stages(cfg: Config) -> list[TrainingStage]:
    """The stages :func:`train` runs for ``cfg``, in order. A training variant is a stage
    of its own chosen here (as conv fine-tuning is), not a flag inside another stage.

    Conv fine-tuning reads no conv5 map of the pre-trained trunk (it runs the trunk, or its
    trained blocks on the frozen prefix's cache), so it comes before any conv5 cache: the
    one cached is the fine-tuned trunk's (issue 23: one trunk pass over the images saved)."""
    stages = [PROPOSALS]
    if cfg.finetune.enabled and cfg.finetune.conv_layers > 0:
        stages += [FINETUNE_CONV, FINETUNED_TRUNK]
    else:
        stages.append(CONV5_CACHE)
        if cfg.finetune.enabled:
            # fc-only fine-tuning on the streamed image-centric batches or on the pooled bank.
            stages.append(FINETUNE_STREAM if cfg.finetune.sampler == "stream" else FINETUNE_FC)
    stages.append(SVMS_ON_POOL5 if cfg.svm.feature == "pool5" else SVMS_ON_FC)
    if cfg.bbox.enabled:
        stages.append(BOX_REGRESSION)
    return stages


def training_settings(cfg: Config) -> SharedSettings:
    """What every training stage reads of ``cfg`` (the rest goes to the stages that declare it)."""
    windows = window_features_key(cfg, section_key(cfg.features, "features", cfg.data))
    return SharedSettings(
        data=cfg.data, proposals=cfg.proposals, seed=cfg.seed, workdir=Path(cfg.workdir), cache_root=cfg.cache_root(),
        device=cfg.torch_device(), multi_scale=multi_scale(cfg),
        windows_key=dict(windows, pool=section_key(cfg.pool, "pool", cfg.data)))


def borrowed_values(sections: dict, borrows: Sequence[str]) -> dict:
    """The values of borrowed fields ("svm.target_norm") in ``sections`` (by name)."""
    out = {}
    for dotted in borrows:
        section, name = dotted.split(".")
        out[dotted] = getattr(sections[section], name)
    return out


def stage_sections(cfg: Config) -> dict:
    """The config sections the training stages declare, by name (each stage is given only its own)."""
    return {"finetune": cfg.finetune, "svm": cfg.svm, "bbox": cfg.bbox}


def build_training_context(cfg: Config, progress: bool = True, backend=None) -> TrainingContext:
    """The shared context of a training run on ``cfg``: data checked, backbone built."""
    check_weights(cfg.backbone)  # a wrong path fails now, not after the proposals
    cache_root = cfg.cache_root()
    return TrainingContext(training_settings(cfg), build_config_backbone(cfg),
                           lambda backbone: build_window_features(cfg, backbone, cache_root), progress, backend)


def train(cfg: Config, progress: bool = True, backend=None) -> TrainResult:
    """Run every training stage and write ``workdir/model.pt`` and ``train_report.json``.

    ``backend``: a ``detector.ray_backend.RayBackend`` to run the proposal and
    conv5-cache stages on (None: this machine); the caches are the same either way.
    """
    seed_everything(cfg.seed)
    start = time.perf_counter()
    ctx = build_training_context(cfg, progress, backend)
    cfg = dataclasses.replace(cfg, proposals=ctx.settings.proposals)  # proposals.auto may have chosen it
    run = TrainingRun(ctx, build_head(cfg, ctx.features.output_dim, len(ctx.class_names)).eval(),
                      stage_sections(cfg))
    stages = training_stages(cfg)
    if not cfg.finetune.enabled and cfg.svm.feature != "pool5":
        logger.warning("svm.feature=%s without fine-tuning: fc layers are random projections here "
                       "(no ImageNet-trained fc weights exist for this backbone)", cfg.svm.feature)
    checkpoints = run_stages(stages, run)
    ctx.timings["total"] = time.perf_counter() - start
    return write_model(cfg, run, checkpoints, [s.name for s in stages if s.checkpointed])


def write_model(cfg: Config, run: TrainingRun, checkpoints: dict[str, Checkpoint],
                learning_stages: list[str]) -> TrainResult:
    """The model file and ``train_report.json`` of a finished run."""
    from proposals import summarize_store

    ctx = run.ctx
    detector = build_detector(cfg, ctx.class_names, ctx.backbone, run.head, run.svms, run.regressors)
    result = TrainResult(
        model_path=ctx.workdir / "model.pt", report_path=ctx.workdir / "train_report.json",
        timings=dict(ctx.timings), stats=_plain(run.stats), train_images=ctx.num_images,
        skipped_images=ctx.verified.bad_as_dicts(), reused_stages=run.reused,
        stage_paths={name: c.path for name, c in checkpoints.items()},
        feature_cache_bytes=ctx.features.cache_bytes(),
        windows_per_train_image=summarize_store(
            ctx.proposals, [r.image_id for r in ctx.verified.records])["windows_per_image"],
        classes_without_training_objects=classes_without_training_objects(
            ctx.verified.records, ctx.class_names, learning_stages, cfg.data.difficult_stages),
        proposal_fit=ctx.proposal_fit.as_dict())
    extra = {"timings": result.timings, "stats": result.stats, "versions": collect_versions(),
             "feature_cache_bytes": result.feature_cache_bytes, "train_images": result.train_images,
             "flipped_images": cfg.data.flip,
             "skipped_images": result.skipped_images, "reused_stages": run.reused,
             "windows_per_train_image": result.windows_per_train_image,
             "proposal_recall": result.proposal_fit,
             **({"proposal_tuning": ctx.proposal_tuning} if ctx.proposal_tuning else {}),
             "classes_without_training_objects": result.classes_without_training_objects}
    save_model(result.model_path, detector, cfg, extra=extra)
    write_json_atomic(result.report_path, _plain({"config": to_dict(cfg), **extra}))
    return result


def _plain(obj):
    """Statistics as plain JSON-able values (numpy scalars and arrays converted)."""
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
