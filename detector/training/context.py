"""What every training stage shares: the verified data, its proposals, the window features,
the stage keys, and the windows the fc layers and box regressors train on.

The stages themselves are declared in ``detector.training.train``, which also builds
the context from the config (:class:`SharedSettings`: only what every stage reads);
a stage's own sections come as arguments. With ``data.flip`` every image also trains
as its mirror (``detector.data.mirror``).
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from proposals.config import ProposalConfig
from proposals.fit import ProposalFit, fit_warning, format_fit, measure_fit
from proposals.tune import tune_cached

from .bbox_stream import MB, RegressionWindows
from ..boxes import flip_boxes
from ..build import build_dataset
from ..config import DATA_STAGES, BBoxConfig, DataConfig, FinetuneConfig, SVMConfig
from .conv_finetune import ConvSample
from ..data import report_dropped_classes
from ..data.mirror import flipped_record, is_flipped, original_id
from ..data.verify import verify_images
from ..fileio import params_digest
from .fc_finetune import WindowLabels, label_windows
from ..features.backbones import Backbone
from ..heads import FCHead
from ..features.pyramid import MAPPING_VERSION, FeatureGrid
from ..progress import progress_of
from ..threads import adapting_threads
from ..records import ImageRecord
from .stages import FINETUNE_WINDOWS, Checkpoint
from .svm import LazyFeatures, TrainImage, all_features
from ..timing import timed_stage
from .validation import held_out_samples, load_held_out
from ..features.distinct import distinct_rows
from ..features.pool5 import ImageSource, WindowFeatures, match_windows
from .window_sampler import ImageCentricSampler, WindowUse

logger = logging.getLogger(__name__)

# Independent random streams (seeded by the config's seed), so the fine-tuning bank
# does not change when a box-regression parameter changes the number of draws.
_FINETUNE_STREAM, _BBOX_STREAM, _SCALE_STREAM, _NORM_STREAM = 1, 2, 3, 4
# bbox.norm_windows=random: the official spp_feature_stats.m:40-41 measures the
# mean norm on 200 random windows of each of at most 200 random images.
NORM_IMAGES, NORM_WINDOWS_PER_IMAGE = 200, 200
# The labels of a record a stage does not see: nothing to draw.
EMPTY_LABELS = WindowLabels(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))

# Config fields added after workdirs existed: a stage key holds one only when
# it differs from its default, so existing workdirs keep their stages.
LATER_FIELDS = {"features": ("scale_rule",), "pool": ("window_scaling",), "finetune": ("lr_steps", "lr_schedule", "warmup_iterations"),
                "svm": ("neg_iou_strict", "neg_dedup", "max_negatives_per_class", "seed_mb", "norm_windows"), "bbox": ("norm_windows",)}


def training_gt(record, use_difficult: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth a training stage learns from: difficult objects left out (py-faster-rcnn's
    default) unless ``use_difficult`` (the official code; ``data.difficult_stages``)."""
    if use_difficult:
        return record.boxes, record.labels
    keep = ~record.difficult
    return record.boxes[keep], record.labels[keep]


def sees(data: DataConfig, stage: str, record) -> bool:
    """Whether training ``stage`` learns from ``record`` (a mirror only with ``data.flip_stages``)."""
    return not is_flipped(record) or data.uses_mirrors(stage)


def records_seen(data: DataConfig, num_records: int, stage: str) -> int:
    """How many of ``num_records`` training records (mirrors included when ``data.flip``) ``stage`` sees."""
    return num_records // 2 if data.flip and not data.uses_mirrors(stage) else num_records


def section_key(section, name: str, data: DataConfig) -> dict:
    """Config section ``name`` (its value ``section``) as a stage key holds it: :data:`LATER_FIELDS`
    only off their defaults; for a training stage, the data rules that differ from the default ones."""
    key = asdict(section)
    default = type(section)()
    for later in LATER_FIELDS.get(name, ()):
        if key[later] == getattr(default, later):
            del key[later]
    if name in DATA_STAGES:
        if data.uses_difficult(name):
            key["difficult"] = True
        if data.flip and not data.uses_mirrors(name):
            key["mirrors"] = False
    return key


@dataclass(frozen=True)
class SharedSettings:
    """The settings every training stage reads (every stage key holds them), taken from the
    config by ``detector.training.train.training_settings``; a stage's own sections
    (finetune, svm, bbox) come to it alone, as a ``detector.training.stages.StageConfig``.

    ``device``: the torch device fine-tuning runs on; ``multi_scale``: SPP at several
    scales (fine-tuning may then pool each window at a random scale); ``windows_key``:
    what the window features read (mode, features or crops, pyramid), as every stage key
    holds it.
    """

    data: DataConfig
    proposals: ProposalConfig
    seed: int
    workdir: Path
    cache_root: Path
    device: Any
    multi_scale: bool
    windows_key: dict


def annotation_digest(record) -> str:
    """Digest of what training reads from an annotation: boxes, labels, difficult flags."""
    return params_digest([record.image_id, np.round(record.boxes.astype(np.float64), 3).tolist(),
                          record.labels.tolist(), record.difficult.tolist()])


@dataclass(frozen=True)
class TrainingWindows:
    """The fine-tuning bank (finetune.sampler=bank): pool5 of the windows the fc layers train on.

    fg/bg: float16 [F, D] / [B, D] positives and background; fg_labels: int64
    [F] class index + 1; fg_keys/bg_keys: int64 each row's window (record
    index x KEY_STRIDE + window index); eligible: each record's labelled
    windows before the caps.
    """

    fg: torch.Tensor
    fg_labels: torch.Tensor
    bg: torch.Tensor
    fg_keys: np.ndarray
    bg_keys: np.ndarray
    eligible: tuple[int, ...]

    def without(self, part: str) -> "TrainingWindows":
        """The same windows less one part's (FINETUNE_WINDOWS), its memory freed."""
        if part == FINETUNE_WINDOWS:
            empty = torch.zeros(0, self.fg.shape[1], dtype=self.fg.dtype)
            return dataclasses.replace(self, fg=empty, fg_labels=self.fg_labels[:0].clone(), bg=empty)
        raise ValueError(f"unknown part of the training windows: {part!r}")


class TrainingContext:
    """What every training stage shares: the verified data, the backbone and its window
    features, the parts every stage key holds; the proposals once ``propose`` ran.

    Args:
        settings: what every stage reads (:class:`SharedSettings`); with
            ``proposals.auto`` the context's copy holds the chosen proposal setting.
        backbone: the trunk (its pre-trained weights).
        features_of: the window features on a trunk, cached (the config's builder).
    """

    def __init__(self, settings: SharedSettings, backbone: Backbone,
                 features_of: Callable[[Backbone], WindowFeatures], progress: bool = True, backend=None):
        data = settings.data
        self.progress = progress
        self.backend = backend
        self.workdir = settings.workdir
        self.timings: dict[str, float] = {}
        with timed_stage(self.timings, "load_dataset"):
            dataset = build_dataset(data, data.train_split)
            report_dropped_classes(dataset, data.root, "data.class_names")  # COCO leaves them out
            records = list(dataset)
            if data.max_train_images > 0:
                records = records[: data.max_train_images]
            if not records:
                raise ValueError(f"{data.root}: split {data.train_split!r} has no images")
            if not any(len(r.boxes) for r in records):
                raise ValueError(f"{data.root}: split {data.train_split!r} has no objects "
                                 f"to train on ({len(records)} images, none annotated)")
            self.verified = verify_images(records, settings.cache_root / "image_checks.json",
                                          strict=data.strict_images, progress=progress,
                                          what=f"{data.root} {data.train_split} split")
        self.dataset_name = dataset.name
        originals = list(self.verified.records)
        # With data.flip every image also trains as its mirror: same file and
        # digest, mirrored boxes and windows, its own conv5 cache entry.
        self.records = originals + ([flipped_record(r) for r in originals] if data.flip else [])
        self.num_images = len(originals)
        self.class_names = tuple(dataset.class_names)
        self.proposal_tuning: dict = {}
        if settings.proposals.auto:  # before the stage keys: the chosen setting keys them, and the model records it
            with timed_stage(self.timings, "proposal_tuning"):
                tuning = tune_cached(originals, self.verified.digests, self.class_names, settings.proposals,
                                     settings.cache_root / "proposal_tuning", settings.seed, log=logger.info)
            logger.info("proposals.auto: chose %s", tuning.describe())
            settings = dataclasses.replace(settings, proposals=tuning.chosen)
            self.proposal_tuning = tuning.as_dict()
        self.settings = settings
        self.images = {r.image_id: ImageSource.from_record(r, self.digest(r), flip=is_flipped(r))
                       for r in self.records}
        # data.val_split: fine-tuning's held-out images (None without one)
        self.held_out = load_held_out(data, settings.cache_root, self.class_names, originals,
                                      self.verified.digests, progress)
        self.backbone = backbone
        self._features_of = features_of
        self.features = features_of(backbone)
        self.common_parts = shared_parts(
            settings, self.class_names, {r.image_id: params_digest([annotation_digest(r), self.digest(r)])
                                         for r in self.records}, self.backbone.digest(), self.backbone.grid)
        self.proposals = None  # a proposals.store.ProposalStore once propose() ran
        self.held_out_proposals = None  # the same for the held-out images
        self.proposal_fit: ProposalFit | None = None

    def propose(self) -> None:
        """The proposals of every original image (cached per image), and their fit, logged."""
        from proposals import compute_split

        s, originals = self.settings, list(self.verified.records)
        search = s.proposals.for_training()  # proposals.train_max_side: the training splits' own search
        self.proposals = compute_split(originals, search, s.cache_root / "proposals",
                                       self.dataset_name, s.data.train_split,
                                       workers=search.workers or None, progress=self.progress,
                                       backend=self.backend)
        self.proposal_fit = check_proposal_fit(originals, self.proposals, self.class_names, s.data.train_split,
                                               search)
        if self.held_out is not None:
            self.held_out_proposals = compute_split(self.held_out.records, search,
                                                    s.cache_root / "proposals", self.dataset_name,
                                                    self.held_out.split, workers=search.workers or None,
                                                    progress=self.progress, backend=self.backend)

    def validation_samples(self, finetune: FinetuneConfig) -> list[ConvSample]:
        """The held-out images' labelled windows (none without ``data.val_split``), labelled by ``finetune``."""
        if self.held_out is None:
            return []
        return held_out_samples(self.held_out, self.held_out_proposals.load, finetune, self.settings.seed,
                                training_gt)

    def cache_conv5(self) -> None:
        """Fill the window features' cache for every training image (and mirror)."""
        self.features.prepare(list(self.images.values()), self.progress, self.backend)

    def adopt_trunk(self, state: dict, prefix_blocks: int = 0) -> None:
        """Load fine-tuned conv weights into the backbone and fill their conv5 cache; with
        ``prefix_blocks`` (conv fine-tuning's learning blocks, its frozen prefix cached) from
        the prefix's cached maps: only the fine-tuned blocks run."""
        self.backbone.load_state_dict(state)
        self.features = self._features_of(self.backbone)
        if prefix_blocks:
            self.features.prepare_from_prefix(list(self.images.values()), prefix_blocks, self.settings.cache_root,
                                              self.progress)
        else:
            self.cache_conv5()

    def digest(self, record) -> str:
        """Content digest of a record's image file (a mirror shares its original's)."""
        return self.verified.digests[original_id(record.image_id)]

    def windows(self, record) -> np.ndarray:
        """The record's proposals (a mirror's are its original's, mirrored)."""
        if is_flipped(record):
            boxes = self.proposals.load(original_id(record.image_id))
            return flip_boxes(boxes, record.width).numpy().astype(np.float32)
        return self.proposals.load(record.image_id)

    def pool5(self, record, boxes: np.ndarray, scale_rng: np.random.Generator | None = None) -> torch.Tensor:
        """pool5 vectors [N, D] of ``boxes`` in ``record``'s image (``scale_rng``: random scales)."""
        return self.features.pool5(self.images[record.image_id], boxes, scale_rng=scale_rng)

    def checkpoint(self, name: str, sections: Mapping[str, Any], borrowed: Mapping[str, Any] = {}) -> Checkpoint:
        """The checkpoint of stage ``name``, keyed by the shared parts, the config ``sections``
        (name -> section) and the ``borrowed`` fields ("section.field" -> value)."""
        parts = stage_parts(self.common_parts, sections, self.settings.data, len(self.records),
                            self.features.output_dim, None if self.held_out is None else self.held_out.key(),
                            borrowed)
        return Checkpoint(self.workdir / "stages", name, parts)


def shared_parts(settings: SharedSettings, class_names: Sequence[str], image_digests: dict[str, str],
                 backbone_digest: str, grid: FeatureGrid) -> dict:
    """What every stage key holds: the training data (class names; each image's and mirror's
    annotation and pixel digest), the proposal parameters, the trunk, the windows' features, the seed."""
    from proposals.store import cache_params

    return {
        "data": {"classes": list(class_names), "images": dict(image_digests)},
        "proposals": cache_params(settings.proposals.for_training()),  # the search training windows come from
        "backbone": backbone_digest,
        # The cell grid and the mapping rule's version: a changed mapping
        # changes every pooled vector, though no parameter changed.
        "windows": dict(settings.windows_key, grid=asdict(grid), mapping=MAPPING_VERSION),
        "seed": settings.seed,
    }


def stage_parts(shared: dict, sections: Mapping[str, Any], data: DataConfig, num_records: int, dim: int,
                validation: dict | None = None, borrowed: Mapping[str, Any] = {}) -> dict:
    """A stage key: the shared parts and each of ``sections`` (config section name -> section).

    The fine-tuning section holds what its sampler reads (:func:`finetune_key`)
    and, only when it has them, its held-out images (``validation``:
    ``HeldOutImages.key()``) and val_every. Box regression's key leaves out
    how it solves (``normal_equations_max_mb``), the SVMs' how they get their
    features again (``replay_mb``), not what. A ``borrowed``
    field ("svm.target_norm" -> value) is added to the stage's own sections'
    keys (the last of ``sections``) only off its section's default: stages
    that read it before it was declared keep their keys.
    """
    parts = dict(shared)
    for name, section in sections.items():
        key = section_key(section, name, data)
        if name == "finetune":
            key = finetune_key(section, key, records_seen(data, num_records, name), dim)
            del key["prefix_cache"]  # how, not what, it computes
            if validation is None:
                del key["val_every"]
            else:
                key["validation"] = validation
        elif name == "bbox":
            del key["normal_equations_max_mb"]
        elif name == "svm":
            del key["replay_mb"]  # how, not what: the same features, replayed or computed again
        parts[name] = key
    for dotted, value in borrowed.items():
        section_name, field_name = dotted.split(".")
        if value != getattr(SECTION_DEFAULTS[section_name], field_name):
            parts[list(sections)[-1]][dotted] = value
    return parts


# The default of each section a stage can borrow a field from.
SECTION_DEFAULTS = {"svm": SVMConfig(), "bbox": BBoxConfig(), "finetune": FinetuneConfig()}


# The fields only finetune.sampler=stream reads, and those only the bank reads.
STREAM_FIELDS = ("sampler", "images_per_batch", "prefetch")
BANK_FIELDS = ("bank_fg_per_image", "bank_bg_per_image", "bank_max_mb", "resample_every")


def finetune_key(section: FinetuneConfig, key: dict, num_records: int, dim: int) -> dict:
    """The fine-tuning section's ``key`` (:func:`section_key`) less the fields its sampler does not read.

    The bank's key is the one it had before samplers existed (its workdirs
    stay valid): its memory budget keys it by the per-image caps it leaves for
    ``num_records`` records of ``dim``-long pool5, only where they bind. The
    stream's holds the sampler, not the bank's fields (the prefetch depth
    changes no result). Conv fine-tuning reads the bank's per-image caps only
    with the bank (:func:`conv_samples`): its key is the bank's, or the stream's.
    """
    key = {k: v for k, v in key.items() if k not in STREAM_FIELDS}
    if section.sampler == "bank":
        del key["bank_max_mb"]
        caps = bank_caps(section, num_records, dim)
        if caps != (section.bank_fg_per_image, section.bank_bg_per_image):
            key["bank_caps"] = list(caps)
        return key
    key = {k: v for k, v in key.items() if k not in BANK_FIELDS}
    return dict(key, sampler=section.sampler, images_per_batch=section.images_per_batch)


def stage_windows(ctx: TrainingContext, record, stage: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A training image's windows for ``stage`` (one of DATA_STAGES): its ground truth
    (:func:`training_gt` by ``data.difficult_stages``), then its proposals, float32 [N, 4];
    and that ground truth's boxes and labels."""
    gt_boxes, gt_labels = training_gt(record, ctx.settings.data.uses_difficult(stage))
    return np.concatenate([gt_boxes, ctx.windows(record)]).astype(np.float32), gt_boxes, gt_labels


def labelled_windows(ctx: TrainingContext, record, finetune: FinetuneConfig, rng: np.random.Generator | None = None,
                     caps: tuple[int, int] | None = None):
    """A training image's fine-tuning windows (:func:`stage_windows`), each window's best IoU and gt
    index, and its fine-tuning labels (``finetune``'s IoU rules): every positive and background
    window, or at most ``caps`` (fg, bg) of them, sampled with ``rng``.

    Returns (windows float32 [N, 4], max_iou [N], argmax [N], WindowLabels).
    """
    windows, gt_boxes, gt_labels = stage_windows(ctx, record, "finetune")
    max_iou, arg = match_windows(windows, gt_boxes)
    label_of_best = gt_labels[arg] if len(gt_boxes) else np.zeros(len(windows), np.int64)
    max_fg, max_bg = caps or (None, None)
    chosen = label_windows(max_iou, label_of_best, finetune, max_fg, max_bg, rng)
    return windows, max_iou, arg, chosen


def bank_caps(finetune: FinetuneConfig, num_images: int, dim: int) -> tuple[int, int]:
    """Fine-tuning windows kept per image (fg, bg): the config's per-image caps, shrunk in
    proportion when ``num_images`` of them would pass ``finetune.bank_max_mb`` (float16 pool5)."""
    fg, bg = finetune.bank_fg_per_image, finetune.bank_bg_per_image
    fit = finetune.bank_max_mb * MB / (2 * dim * max(num_images, 1))
    if fg + bg > fit:
        shrink = fit / (fg + bg)
        fg, bg = max(1, int(fg * shrink)), max(1, int(bg * shrink))
    return fg, bg


# Bank keys: record index x KEY_STRIDE + window index.
KEY_STRIDE = 1 << 32


def _scale_rng(settings: SharedSettings, finetune: FinetuneConfig, draw: int) -> np.random.Generator | None:
    """Random scales of the fine-tuning windows (finetune.random_scale), None at one scale:
    there is no choice to make."""
    random_scales = settings.multi_scale and finetune.random_scale
    return np.random.default_rng([settings.seed, _SCALE_STREAM, draw]) if random_scales else None


def collect_training_windows(ctx: TrainingContext, finetune: FinetuneConfig, draw: int = 0) -> TrainingWindows:
    """One pass over the images: pool5 of the fine-tuning bank's windows (finetune.sampler=bank).

    Windows are the proposals plus the ground-truth boxes (R-CNN adds the
    ground truth to its positives). ``draw`` numbers the bank (each draw
    samples other windows, see ``finetune.resample_every``).
    """
    s = ctx.settings
    ft_rng = np.random.default_rng([s.seed, _FINETUNE_STREAM, draw])
    scale_rng = _scale_rng(s, finetune, draw)
    caps = bank_caps(finetune, records_seen(s.data, len(ctx.records), "finetune"), ctx.features.output_dim)
    fg, fg_labels, bg, fg_keys, bg_keys, eligible = [], [], [], [], [], []
    for i, r in enumerate(adapting_threads(progress_of(ctx.records, desc="pool training windows", unit="img",
                                                       enabled=ctx.progress))):
        # A record fine-tuning does not see (a mirror without data.flip_stages
        # naming it) still draws, so the others' draws stay as they were.
        windows, max_iou, _, chosen = labelled_windows(ctx, r, finetune, ft_rng, caps)
        if not sees(s.data, "finetune", r):
            eligible.append(0)
            continue
        eligible.append(int((max_iou >= finetune.bg_iou_low).sum()))  # fg and bg, before the caps
        wanted = np.unique(np.concatenate([chosen.fg_index, chosen.bg_index]))
        if len(wanted) == 0:
            continue
        pool = (wanted, ctx.pool5(r, windows[wanted], scale_rng))
        fg.append(_rows(pool, chosen.fg_index).half())
        fg_labels.append(torch.from_numpy(chosen.fg_labels))
        bg.append(_rows(pool, chosen.bg_index).half())
        fg_keys.append(i * KEY_STRIDE + chosen.fg_index)
        bg_keys.append(i * KEY_STRIDE + chosen.bg_index)
    dim = ctx.features.output_dim

    def cat(parts, empty):
        return torch.cat(parts) if parts else empty

    def keys(parts):
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    return TrainingWindows(
        fg=cat(fg, torch.zeros(0, dim, dtype=torch.float16)),
        fg_labels=cat(fg_labels, torch.zeros(0, dtype=torch.int64)),
        bg=cat(bg, torch.zeros(0, dim, dtype=torch.float16)),
        fg_keys=keys(fg_keys), bg_keys=keys(bg_keys), eligible=tuple(eligible))


def conv_samples(ctx: TrainingContext, finetune: FinetuneConfig) -> list[ConvSample]:
    """Every training image with its labelled windows, for conv fine-tuning: every positive
    and background window, or with finetune.sampler=bank at most the bank's per-image caps
    (sampled once)."""
    rng = np.random.default_rng([ctx.settings.seed, _FINETUNE_STREAM])
    # Boxes only, no pool5 bank to budget: the configured per-image caps.
    caps = (finetune.bank_fg_per_image, finetune.bank_bg_per_image) if finetune.sampler == "bank" else None
    samples = []
    for r in (r for r in ctx.records if sees(ctx.settings.data, "finetune", r)):
        windows, _, _, labels = labelled_windows(ctx, r, finetune, rng, caps)
        samples.append(ConvSample(ctx.images[r.image_id], windows, labels))
    return samples


def streamed_windows(ctx: TrainingContext, finetune: FinetuneConfig
                     ) -> tuple[ImageCentricSampler, Callable[[int, np.ndarray], torch.Tensor]]:
    """The image-centric sampler over every training image's labelled windows (none
    capped; none of a record fine-tuning does not see, :func:`sees`), and the pool function
    of its draws: (record index, window indices) -> pool5 from the conv5 cache, each window
    at a random scale with finetune.random_scale.

    Only the labels are held; a draw's windows are read again from the proposal store.
    """
    s = ctx.settings
    labels = [labelled_windows(ctx, r, finetune)[3] if sees(s.data, "finetune", r) else EMPTY_LABELS
              for r in progress_of(ctx.records, desc="label training windows", unit="img",
                                   enabled=ctx.progress)]
    sampler = ImageCentricSampler(labels, finetune.batch_size, finetune.fg_fraction,
                                  finetune.images_per_batch, np.random.default_rng([s.seed, _FINETUNE_STREAM]))
    scale_rng = _scale_rng(s, finetune, 0)

    def pool(i: int, index: np.ndarray) -> torch.Tensor:
        record = ctx.records[i]
        return ctx.pool5(record, stage_windows(ctx, record, "finetune")[0][index], scale_rng)
    return sampler, pool


def regression_windows(ctx: TrainingContext, bbox: BBoxConfig,
                       classes: Sequence[int] | None = None) -> Iterator[RegressionWindows]:
    """Each training image's box-regression windows (IoU >= bbox.min_iou with a gt box of
    :func:`stage_windows`), pooled, one image at a time, of the records box regression sees:
    all of them, or ``bbox.max_per_image`` sampled (the same each call, and the same as the
    in-memory regression drew before issue 29); with ``classes``, those whose gt box is of
    one of ``classes``."""
    rng = np.random.default_rng([ctx.settings.seed, _BBOX_STREAM])  # one stream over the images, as before
    for i, r in enumerate(adapting_threads(progress_of(ctx.records, desc="box regression windows", unit="img",
                                                       enabled=ctx.progress))):
        if not sees(ctx.settings.data, "bbox", r):
            continue
        windows, gt_boxes, gt_labels = stage_windows(ctx, r, "bbox")
        if not len(gt_boxes):
            continue
        max_iou, arg = match_windows(windows, gt_boxes)
        reg = np.flatnonzero(max_iou >= bbox.min_iou)
        eligible = len(reg)
        if 0 < bbox.max_per_image < len(reg):
            reg = np.sort(rng.choice(reg, bbox.max_per_image, replace=False))
        if classes is not None:
            reg = reg[np.isin(gt_labels[arg[reg]], classes)]
        if eligible == 0 or (classes is not None and not len(reg)):
            continue
        features = ctx.pool5(r, windows[reg]).numpy() if len(reg) else np.zeros((0, ctx.features.output_dim),
                                                                              np.float32)
        yield RegressionWindows(image=i, features=features, boxes=windows[reg], gt_boxes=gt_boxes[arg[reg]],
                                labels=gt_labels[arg[reg]].astype(np.int64), eligible=eligible)


def random_window_norm(ctx: TrainingContext, stage: str = "bbox",
                       features: Callable[[torch.Tensor], torch.Tensor] | None = None) -> float | None:
    """``bbox.norm_windows=random`` / ``svm.norm_windows=random``: the mean L2 norm of the
    features of up to :data:`NORM_WINDOWS_PER_IMAGE` random windows (ground truth and
    proposals, :func:`stage_windows`) of each of :func:`norm_images` ``stage`` sees;
    ``features`` maps pool5 rows to the stage's features (None: pool5 itself). None when
    those images have no window."""
    norm_ids = norm_images(ctx, stage)
    rng = np.random.default_rng([ctx.settings.seed, _NORM_STREAM])
    norms = []
    for r in (r for r in ctx.records if r.image_id in norm_ids):
        windows = stage_windows(ctx, r, stage)[0]
        picked = rng.permutation(len(windows))[:NORM_WINDOWS_PER_IMAGE]
        pooled = ctx.pool5(r, windows[picked])
        norms.append(torch.linalg.vector_norm(pooled if features is None else features(pooled), dim=1).numpy())
    norms = np.concatenate(norms) if norms else np.zeros(0)
    return float(norms.mean(dtype=np.float64)) if len(norms) else None


def norm_images(ctx: TrainingContext, stage: str = "bbox") -> set[str]:
    """The images whose random windows set a stage's features' norm (``norm_windows=random``):
    at most :data:`NORM_IMAGES` of those ``stage`` learns from."""
    ids = [r.image_id for r in ctx.records if sees(ctx.settings.data, stage, r)]
    rng = np.random.default_rng([ctx.settings.seed, _NORM_STREAM])
    return {ids[i] for i in rng.permutation(len(ids))[:NORM_IMAGES]}


def bank_use(keys: np.ndarray, eligible: Sequence[int]) -> WindowUse:
    """The bank's use of the labelled windows: ``keys`` of the bank rows mini-batches took
    (record index x KEY_STRIDE + window index, repeats allowed), ``eligible`` each record's
    labelled windows."""
    distinct = np.unique(keys)
    return WindowUse(distinct_windows=len(distinct), eligible_windows=int(sum(eligible)),
                     images=len(np.unique(distinct // KEY_STRIDE)),
                     eligible_images=int(sum(e > 0 for e in eligible)))


def _rows(pool: tuple[np.ndarray, torch.Tensor], index: np.ndarray) -> torch.Tensor:
    """Rows of pooled vectors for window ``index`` (pool: sorted window indices, their vectors)."""
    wanted, pooled = pool
    return pooled[torch.from_numpy(np.searchsorted(wanted, index))]


def classes_without_training_objects(records, class_names, stages: list[str],
                                     difficult_stages: Sequence[str] = ()) -> dict[str, list[str]]:
    """The classes with no object in ``records`` that a stage learns from, each with those of
    ``stages`` that then learn nothing for it (no positive for the SVM, no window for the box
    regressor or the fine-tuned classifier), so it is never detected. A stage in
    ``difficult_stages`` (``data.difficult_stages``) counts difficult objects too."""
    counts = {use: np.zeros(len(class_names), np.int64) for use in (False, True)}
    for r in records:
        for use, c in counts.items():
            c += np.bincount(training_gt(r, use)[1], minlength=len(class_names))
    empty: dict[str, list[str]] = {}
    for stage in stages:
        for k in np.flatnonzero(counts[stage in difficult_stages] == 0):
            empty.setdefault(class_names[k], []).append(stage)
    return empty


class ReplayedImages:
    """A fresh iterator over the training images' SVM features at each call: the first call
    keeps the images it computes, in order, while their features fit in ``replay_mb`` MiB;
    later calls yield those again (the same arrays) and compute only the rest."""

    def __init__(self, compute: Callable[[object], TrainImage], records: Sequence, replay_mb: float):
        self._compute, self._records = compute, records
        self._kept: list[TrainImage] = []
        self._budget = replay_mb * MB
        self._first = True

    @property
    def replayed(self) -> int:
        """How many images the later calls reuse."""
        return len(self._kept)

    def __call__(self) -> Iterator[TrainImage]:
        filling, self._first = self._first, False
        for i, r in enumerate(self._records):
            if i < len(self._kept):
                yield self._kept[i]
                continue
            image = self._compute(r)
            size = image.features.nbytes + image.gt_features.nbytes
            if filling and i == len(self._kept) and size <= self._budget:
                self._budget -= size
                all_features(image.features)  # a kept image holds its features, not its pooled windows
                self._kept.append(image)
            yield image


def svm_features(head: FCHead, layer: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """pool5 rows -> the SVMs' features (``layer``: svm.feature), each distinct pool5 vector
    through the fc layers once, as the detector scores windows (windows on the same cells
    share one vector): less fc work, the same values up to the GEMM's rounding."""
    def features(pooled: torch.Tensor) -> torch.Tensor:
        first, inverse = distinct_rows(pooled.numpy())
        return head.features(pooled[torch.from_numpy(first)], layer)[torch.from_numpy(inverse)]
    return features


def svm_training_images(ctx: TrainingContext, head: FCHead, layer: str, replay_mb: float = 0.0,
                        lazy: bool = False) -> ReplayedImages:
    """The training images' SVM features (``layer``: svm.feature), a fresh iterator at each
    call, the first call's replayed within ``replay_mb`` (svm.replay_mb) MiB. ``lazy``: the
    proposal windows' features are :class:`LazyFeatures`, computed when a pass asks for them
    (the collect pass, given the mean norm, asks for the seed negatives' only)."""
    data = ctx.settings.data
    # With data.difficult_stages naming svm, no object is held out of the positives.
    difficult = not data.uses_difficult("svm")
    features = svm_features(head, layer)

    def compute(r) -> TrainImage:
        windows = ctx.windows(r)
        both = np.concatenate([r.boxes, windows]).astype(np.float32)
        pooled = ctx.pool5(r, both)
        g = len(r.boxes)
        if lazy:
            gt_feats = features(pooled[:g]).numpy()
            window_pool = pooled[g:]
            feats = LazyFeatures(len(windows), gt_feats.shape[1], lambda idx: features(
                window_pool if idx is None else window_pool[torch.from_numpy(idx)]).numpy())
        else:
            both_feats = features(pooled).numpy()
            gt_feats, feats = both_feats[:g], both_feats[g:]
        return TrainImage(image_id=r.image_id, features=feats, boxes=windows,
                          gt_features=gt_feats, gt_boxes=r.boxes, gt_labels=r.labels,
                          gt_difficult=r.difficult & difficult)
    return ReplayedImages(compute, [r for r in ctx.records if sees(data, "svm", r)], replay_mb)


def check_proposal_fit(records: list[ImageRecord], store, class_names, split: str,
                       proposals: ProposalConfig) -> ProposalFit:
    """Recall of the training windows on the training ``split``, logged; a warning below proposals.min_recall."""
    fit = measure_fit(records, store.load, class_names, split, proposals.min_size)
    logger.info("%s", format_fit(fit))
    warning = fit_warning(fit, proposals)
    if warning:
        logger.warning("%s", warning)
    return fit
