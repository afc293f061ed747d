"""The detector's configuration, one dataclass per stage.

Defaults follow the paper (He et al. 2014) and the official SPP-net code
where they have one; ``configs/*.yaml`` hold only what differs. Loaded with
:func:`load_detector_config` (unknown keys are errors).
"""
from __future__ import annotations

import os
from pathlib import Path
from dataclasses import dataclass, field

from proposals.config import ProposalConfig

from .configio import ConfigError, from_dict, load_config, merge, parse_overrides, to_dict
from .features.mapping import CANONICAL_WINDOW, DEFAULT_LEVELS, DEFAULT_WINDOW_MARGIN

BACKBONES = ("zf5", "alexnet", "vgg16", "squeezenet1_0", "mobilenet_v2", "resnet18", "resnet50", "tiny")
SVM_FEATURES = ("pool5", "fc6", "fc7")
SCORERS = ("svm", "softmax")
# The training stages a data rule (mirrors, difficult objects) can apply to.
DATA_STAGES = ("finetune", "svm", "bbox")
# Test-time order of box regression and NMS (docs/method.md, "Test time").
TEST_ORDERS = ("regress_then_nms", "nms_then_regress")
SCALE_RULES = ("area", "side")
WINDOW_SCALINGS = ("plain", "corner")
NEG_DEDUPS = ("nms", "identical")
BBOX_NORM_WINDOWS = ("regression", "random")
SVM_NORM_WINDOWS = ("all", "random")
FINETUNE_SAMPLERS = ("stream", "bank")
LR_SCHEDULES = ("step", "cosine")
# Test-time forms of the fc layers (detector/heads.py, compress_head).
FC_COMPRESSIONS = ("none", "svd", "int8", "svd_int8")


@dataclass(frozen=True)
class DataConfig:
    # A PASCAL VOC-layout folder (Annotations/, JPEGImages/, ImageSets/Main/).
    root: str = ""
    # "voc" for VOC layout; "coco" reads a COCO JSON (annotations) + image folder.
    format: str = "voc"
    # VOC 2007: the paper trains on trainval and tests on test.
    train_split: str = "trainval"
    test_split: str = "test"
    # Empty list: class names are discovered from the annotations (sorted).
    class_names: list[str] = field(default_factory=list)
    # COCO format only: the JSON per split, "{split}" is replaced by the split name.
    annotations: str = ""
    # COCO format only: folder holding the images.
    images: str = ""
    # Train on the first N images of the training split only (0 = all): for
    # quick experiments and the reduced R-CNN comparison protocol.
    max_train_images: int = 0
    # Every image of a split is decoded once before any stage runs. A corrupt,
    # truncated or non-image file is skipped with a warning that lists them
    # all (and recorded in train_report.json / metrics.json); true makes any
    # such file an error instead (ultralytics' default behaviour is the skip).
    strict_images: bool = False
    # Also train on every training image's left-right mirror: twice the
    # training windows and conv5 cache, no change at test time.
    flip: bool = True
    # The stages that train on the mirrors when flip is true. The official
    # code mirrors for fine-tuning only (Script_spp_voc.m:27,34: flip_finetune
    # true, flip false); the default keeps all three.
    flip_stages: list[str] = field(default_factory=lambda: list(DATA_STAGES))
    # The stages whose ground truth includes objects marked difficult. The
    # official code keeps them in all three (Script_spp_voc.m:43
    # with_hard_samples = false -> roidb_from_voc.m:136-141 keeps every
    # object); the default leaves them out of all (py-faster-rcnn's default).
    difficult_stages: list[str] = field(default_factory=list)
    # A held-out split for fine-tuning ("" = none): its windows' loss and
    # accuracy are logged every finetune.val_every iterations and the
    # snapshot with the lowest loss is kept (the official SPP_net solver's
    # rule, as issue 23 describes it). Its images must not be training images.
    val_split: str = ""

    def validate(self) -> None:
        if self.format not in ("voc", "coco"):
            raise ValueError(f"data.format {self.format!r} must be voc or coco")
        for name in ("flip_stages", "difficult_stages"):
            unknown = [s for s in getattr(self, name) if s not in DATA_STAGES]
            if unknown:
                raise ValueError(f"data.{name}: {', '.join(map(repr, unknown))} not one of "
                                 f"{', '.join(DATA_STAGES)}")
        if self.val_split and self.val_split == self.train_split:
            raise ValueError(f"data.val_split {self.val_split!r} is the training split; validation needs "
                             "held-out images")

    def uses_mirrors(self, stage: str) -> bool:
        """Whether training ``stage`` (one of DATA_STAGES) sees the mirrored images."""
        return self.flip and stage in self.flip_stages

    def uses_difficult(self, stage: str) -> bool:
        """Whether training ``stage``'s ground truth includes difficult objects."""
        return stage in self.difficult_stages


@dataclass(frozen=True)
class BackboneConfig:
    # ZF-5 is the paper's network; the demo uses "tiny" (trainable from scratch on CPU).
    name: str = "zf5"
    # None: random init; "DEFAULT": torchvision's weight enum (downloads);
    # otherwise a local state_dict path (loaded with weights_only=True).
    weights: str | None = None
    # Input normalisation the weights expect: None picks the backbone's own
    # (torchvision ImageNet mean/std); "caffe" (BGR, 0-255, mean subtracted) for
    # Caffe-converted weights; "caffe_bgr128" (BGR, 0-255, minus 128: the
    # official SPP-net code's input) for its ZF-5; "inception" ([-1, 1]) for
    # TF/TFLite weights; "imagenet" to force torchvision's. See
    # ../shared/weights/README.md.
    preprocess: str | None = None

    def validate(self) -> None:
        if self.name not in BACKBONES:
            raise ValueError(f"backbone.name {self.name!r} is not one of {', '.join(BACKBONES)}")


@dataclass(frozen=True)
class FeatureConfig:
    # Shorter-side lengths: paper 1-scale {688}; 5-scale {480, 576, 688, 874,
    # 1200} in the official code (experiments/Script_spp_voc.m; the paper's
    # text says 864).
    scales: list[int] = field(default_factory=lambda: [688])
    # Cap on the longer side after resizing (paper images are ~500x375, so 688
    # gives ~917; the cap protects against panoramas).
    max_size: int = 2000
    # conv5 maps are cached as float16 on disk: half the bytes, no measurable mAP change.
    cache_dtype: str = "float16"
    # Which scale pools a window when there are several (pool.canonical_window
    # is the target side T): "area", the scale whose scaled window area is
    # closest to T^2 (the paper's words); "side", the official
    # spm_expected_scale.m:17-21: the scale s nearest round(T * min_side /
    # sqrt(area)) (T = 208 for ZF-5: 13 cells x 16 px). With one scale there
    # is no choice to make.
    scale_rule: str = "area"

    def validate(self) -> None:
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ValueError("features.scales must be a non-empty list of positive sizes")
        if self.cache_dtype not in ("float16", "float32"):
            raise ValueError("features.cache_dtype must be float16 or float32")
        if self.scale_rule not in SCALE_RULES:
            raise ValueError(f"features.scale_rule {self.scale_rule!r} must be one of {', '.join(SCALE_RULES)}")


@dataclass(frozen=True)
class PoolConfig:
    # The paper's 4-level pyramid: 6x6 + 3x3 + 2x2 + 1x1 = 50 bins (pooling.DEFAULT_LEVELS).
    levels: list[int] = field(default_factory=lambda: list(DEFAULT_LEVELS))
    # Scale selection's target side (features.scale_rule): 224, the paper's
    # crop; the official ZF-5 model uses 208 (sz_conv_standard 13 x 16 px).
    canonical_window: int = CANONICAL_WINDOW
    # Window -> conv5 cells: keep the cells whose centres lie inside the window
    # (paper, Appendix A). In strides; the official code's per-model "offset"
    # is this * S - 0.5 px (ZF-5's 6.5 px: 7/16 = 0.4375). Cell centres come
    # from the backbone (its grid).
    window_margin: float = DEFAULT_WINDOW_MARGIN
    # Window -> resized image: "plain" multiplies the coordinates by the
    # resize factor; "corner" aligns the corner pixels' centres as the
    # official spp_features_convX_to_poolX.m:45 does (detector/features/mapping.py: scale_windows).
    window_scaling: str = "plain"

    def validate(self) -> None:
        if self.window_scaling not in WINDOW_SCALINGS:
            raise ValueError(f"pool.window_scaling {self.window_scaling!r} must be one of "
                             f"{', '.join(WINDOW_SCALINGS)}")


@dataclass(frozen=True)
class FinetuneConfig:
    # Fine-tune fc6, fc7 and a (K+1)-way classifier on pooled conv5 features.
    enabled: bool = True
    # Width of fc6/fc7 (4096 in the paper; smaller nets do well with less).
    hidden: int = 4096
    dropout: float = 0.5
    # R-CNN/SPP-net: positives IoU >= 0.5, negatives IoU in [0.1, 0.5).
    fg_iou: float = 0.5
    bg_iou_low: float = 0.1
    # 25% positives per mini-batch of 128 windows (R-CNN / SPP-net).
    fg_fraction: float = 0.25
    batch_size: int = 128
    # How mini-batches find their windows. "stream": each draws
    # images_per_batch images, then windows from those images (fg_fraction
    # positives), pooled from the conv5 cache as training goes, a few batches
    # ahead (prefetch) in a background thread: every window of every image
    # (and mirror) is eligible at every step, and memory is batch x prefetch
    # pooled rows whatever the number of images (Fast R-CNN's image-centric
    # sampling). "bank": windows sampled once per image into an in-memory
    # pool5 bank (the bank_* settings below), as before issue 29. With
    # conv_layers, "stream" labels every window and "bank" caps them per image.
    sampler: str = "stream"
    # Fast R-CNN's 2 images per mini-batch of 128: 2 conv5 cache reads a step
    # (one more image is one more read), and Fast R-CNN found windows of 2
    # images train as well as windows of 128.
    images_per_batch: int = 2
    prefetch: int = 4
    # sampler=bank only. Windows kept per training image for the in-memory
    # pool5 bank (sampled uniformly): bounds memory at (fg + bg) x images x
    # pool5 x 2 bytes; with conv_layers, the per-image caps of the labels.
    bank_fg_per_image: int = 64
    bank_bg_per_image: int = 192
    # sampler=bank only. Memory budget of the bank in MB (float16 pool5): with
    # many images the per-image caps shrink in proportion so the bank stays
    # under it. It binds past 2000 MB / (256 windows x pool5 bytes) training
    # images (mirrors count): ~850 at MobileNetV2's 4800-d pool5; VOC 2007 with
    # mirrors at 4800-d: 5 fg + 16 bg per image.
    bank_max_mb: float = 2000.0
    # SPP-net fine-tunes with lr 1e-4 then 1e-5 for 250k+50k iterations on
    # VOC; on small sets a few epochs with SGD at 1e-3 converge.
    lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 0.0005
    iterations: int = 2000
    # At several scales, pool each fine-tuning window at a random scale (the
    # official spp_finetune_voc.m) rather than the one scale selection picks;
    # SVMs, box regression and testing always use scale selection.
    random_scale: bool = True
    # Also fine-tune the last N parameterised blocks of the conv trunk,
    # back-propagating through the pyramid (0: the paper's frozen trunk; Fast
    # R-CNN measured +5.5 mAP for VGG16 on VOC07 from training conv layers).
    # Mini-batches of conv_images_per_batch images at a random scale each;
    # batch norm stays frozen. Much slower on a CPU than fc-only fine-tuning.
    conv_layers: int = 0
    conv_images_per_batch: int = 2
    # With conv_layers: the trunk's frozen blocks run once per image and scale
    # (their output cached float32 under <cache root>/prefix, the same values),
    # each iteration only the learning blocks (issue 23: docs/benchmarks.md).
    # Not in the stage key: the result is the same.
    prefix_cache: bool = True
    # With data.val_split: iterations between held-out evaluations (and one at the end).
    val_every: int = 100
    # sampler=bank only. Draw a new bank of windows from every training image
    # each this many iterations (0: draw once). The official code re-draws
    # every 500 (spp_finetune_voc.m); each draw is one more pooling pass.
    resample_every: int = 0
    # Drop the learning rate by 10x after this fraction of the iterations.
    lr_step_fraction: float = 0.8
    # Or at these iterations (each a 10x drop; empty: lr_step_fraction). The
    # official solver: [30000, 60000] of 200000 at lr 1e-3
    # (pascal_finetune_fc_spm_solver.prototxt:15-25).
    lr_steps: list[int] = field(default_factory=list)
    # "step": the 10x drops above (R-CNN, SPP-net); "cosine": from lr down to 0
    # at the last iteration along half a cosine (lr_steps and lr_step_fraction unused).
    lr_schedule: str = "step"
    # Iterations of linear warm-up from lr/1000 to the schedule's rate (0: none;
    # detectron2's warm-up): the first steps of a freshly initialised head then
    # do not move the fine-tuned conv blocks far.
    warmup_iterations: int = 0

    def milestones(self) -> list[int]:
        """The iterations at which the learning rate drops 10x."""
        return list(self.lr_steps) or [int(self.iterations * self.lr_step_fraction)]

    def validate(self) -> None:
        if self.sampler not in FINETUNE_SAMPLERS:
            raise ValueError(f"finetune.sampler {self.sampler!r} must be one of {', '.join(FINETUNE_SAMPLERS)}")
        if self.images_per_batch < 1 or self.prefetch < 1:
            raise ValueError("finetune.images_per_batch and finetune.prefetch must be >= 1")
        if any(s <= 0 for s in self.lr_steps) or list(self.lr_steps) != sorted(self.lr_steps):
            raise ValueError("finetune.lr_steps must be increasing positive iterations")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"finetune.lr_schedule {self.lr_schedule!r} must be one of {', '.join(LR_SCHEDULES)}")
        if not 0 <= self.warmup_iterations < max(self.iterations, 1):
            raise ValueError(f"finetune.warmup_iterations {self.warmup_iterations} must be in "
                             f"[0, finetune.iterations {self.iterations})")
        if self.bank_max_mb <= 0:
            raise ValueError("finetune.bank_max_mb must be > 0")
        if self.val_every < 1:
            raise ValueError("finetune.val_every must be >= 1")
        if self.conv_layers < 0 or self.conv_images_per_batch < 1 or self.resample_every < 0:
            raise ValueError("finetune.conv_layers and resample_every must be >= 0, "
                             "conv_images_per_batch >= 1")


@dataclass(frozen=True)
class SVMConfig:
    # Which features the SVMs read: fc7 (fine-tuned), or pool5/fc6 (paper's ablations).
    feature: str = "fc7"
    # Official SPP-net code: C = 0.001, positive weight 2, bias multiplier 10.
    C: float = 0.001
    pos_weight: float = 2.0
    bias_multiplier: float = 10.0
    # Features scaled so their mean L2 norm is 20 (R-CNN / SPP-net).
    target_norm: float = 20.0
    # Which windows measure that mean norm: "all", every proposal window of every
    # training image (exact; the collect pass then computes every window's features);
    # "random", up to 200 random windows from each of up to 200 random training images
    # (the official spp_train.m -> spp_feature_stats.m:40-63): the collect pass then
    # computes the features of the ground truth and the seed negatives it keeps only
    # (not with neg_dedup=identical, which compares every window's features).
    norm_windows: str = "all"
    # Negatives: windows with IoU <= 0.3 with every ground-truth box of the class.
    neg_iou: float = 0.3
    # True: IoU < neg_iou instead (the official Script_spp_voc.m:49 with
    # spp_train.m:280,291: overlap < 0.3).
    neg_iou_strict: bool = False
    # Duplicate negatives within an image and class: "nms" drops a negative
    # overlapping another kept one by more than neg_nms (R-CNN's rule);
    # "identical" pools windows with identical pooled features once, as the
    # official spp_train.m:261-263 keeps one window per cell range and scale.
    neg_dedup: str = "nms"
    neg_nms: float = 0.7
    # R-CNN hard-negative thresholds: mine windows scoring > -1.0001, evict
    # cached negatives scoring < -1.2.
    hard_threshold: float = -1.0001
    evict_threshold: float = -1.2
    # One pass over the training images is what the paper used.
    mining_rounds: int = 1
    # First batch of negatives per image before mining starts (random sample).
    initial_negatives: int = 200
    # Cached negatives kept per class after each update (the easiest extra
    # ones go). 0 = no bound: the official code's caches. The SVM stats record
    # how many negatives a bound dropped (negatives_dropped_by_cap).
    max_negatives_per_class: int = 0
    # The collect pass's seed negatives (initial_negatives per image and class, from
    # every image) are a uniform reservoir sample of at most this many MiB over all
    # classes: seed_mb / (classes x feature dim x 4 bytes) rows per class. Without it
    # the seeds grow with the images: at VOC 2007 (10,022 records, 20 classes, fc7 of
    # 2048) 200 per image and class would be ~300 GB. The small shipped sets stay
    # under it (raccoon, BCCD: every seed kept). 0 = no bound.
    seed_mb: float = 2048.0
    # The first pass's window features (fc7/fc6/pool5) kept in memory, up to this
    # many MiB, and replayed by the mining rounds instead of computed again (issue
    # 23: feature extraction was ~94% of the stage, done once per pass). The same
    # values either way; 0 = recompute every pass. How, not what: no stage key.
    replay_mb: float = 2048.0

    def validate(self) -> None:
        if self.replay_mb < 0:
            raise ValueError("svm.replay_mb must be >= 0 (0 = recompute the features every pass)")
        if self.seed_mb < 0:
            raise ValueError("svm.seed_mb must be >= 0 (0 = every image's seed negatives kept)")
        if self.max_negatives_per_class < 0:
            raise ValueError("svm.max_negatives_per_class must be >= 0 (0 = no bound)")
        if self.feature not in SVM_FEATURES:
            raise ValueError(f"svm.feature {self.feature!r} must be one of {', '.join(SVM_FEATURES)}")
        if self.neg_dedup not in NEG_DEDUPS:
            raise ValueError(f"svm.neg_dedup {self.neg_dedup!r} must be one of {', '.join(NEG_DEDUPS)}")
        if self.norm_windows not in SVM_NORM_WINDOWS:
            raise ValueError(f"svm.norm_windows {self.norm_windows!r} must be one of {', '.join(SVM_NORM_WINDOWS)}")


# Keys a released version wrote into model files and export manifests that this
# version no longer has, with why. A stored config (a trained model's provenance)
# drops them on load; a config file that sets one is an error that gives the reason.
RETIRED_KEYS: dict[str, str] = {
    "bbox.max_mb": "issue 29: box regression accumulates normal equations image by image, no budget",
}


def without_retired_keys(stored: dict) -> dict:
    """A copy of a stored config dict without :data:`RETIRED_KEYS` (its other keys as they are)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in stored.items()}
    for dotted in RETIRED_KEYS:
        section, key = dotted.split(".")
        if isinstance(out.get(section), dict):
            out[section].pop(key, None)
    return out


@dataclass(frozen=True)
class BBoxConfig:
    enabled: bool = True
    # R-CNN trains regressors on windows with IoU >= 0.6 with a ground-truth box.
    min_iou: float = 0.6
    # Ridge penalty (R-CNN uses lambda = 1000 on unnormalised pool5).
    ridge_lambda: float = 1000.0
    # At most this many training windows per image (sampled); 0 = every
    # window over min_iou, as R-CNN. Memory does not depend on it: the ridge
    # normal equations are accumulated image by image.
    max_per_image: int = 0
    # Which windows set the feature scale (target_norm / mean L2 norm):
    # "regression", the regression windows themselves; "random", up to 200
    # random windows from each of up to 200 random training images (the
    # official spp_feature_stats.m:40-63).
    norm_windows: str = "regression"
    # Memory for the per-class normal equations (float64 D x D each: 184 MB
    # at MobileNetV2's 4800-d pool5, 1.3 GB at ZF-5's 12800-d): the classes
    # that do not fit are solved in further passes over the images. Not in
    # the stage key: the result is the same.
    normal_equations_max_mb: float = 4000.0

    def validate(self) -> None:
        if self.max_per_image < 0 or self.normal_equations_max_mb <= 0:
            raise ValueError("bbox.max_per_image must be >= 0 (0 = no cap) and "
                             "bbox.normal_equations_max_mb > 0")
        if self.norm_windows not in BBOX_NORM_WINDOWS:
            raise ValueError(f"bbox.norm_windows {self.norm_windows!r} must be one of "
                             f"{', '.join(BBOX_NORM_WINDOWS)}")


@dataclass(frozen=True)
class TestConfig:
    # Per-class NMS at IoU 0.3 (SPP-net/R-CNN).
    nms_iou: float = 0.3
    # At most 100 detections per class per image, after NMS: the official
    # SPP-net code (spp_test.m: max_per_image = 100, applied to each class).
    max_per_class: int = 100
    # At most this many per image over all classes (0 = no cap, as in the
    # official code; py-faster-rcnn and Fast R-CNN's final test.py use 100).
    max_per_image: int = 0
    # Windows scoring below this are dropped before NMS (-inf keeps all): an
    # SVM score with the SVM scorer, a probability with softmax (Fast R-CNN
    # keeps >= 0.05 there).
    score_threshold: float = -1.5
    # What scores a window: "svm" (the paper: one linear SVM per class on
    # svm.feature) or "softmax" (the fine-tuned (K+1)-way classifier's class
    # probabilities; Fast R-CNN, Sec. 5.4, found them equal or better).
    scorer: str = "svm"
    # Intra-op threads of the conv and fc layers; 0 picks them per image: the
    # free cores (detector/threads.py). The SPPNET_THREADS variable wins.
    threads: int = 0
    # Test-time compression of fc6/fc7 (Fast R-CNN, Sec. 3.1): "none"; "svd"
    # (each layer as two, through its top svd_rank singular vectors); "int8"
    # (dynamic int8 quantisation of the fc layers); "svd_int8" (both). At
    # ~2000 windows the fc layers cost as much as the conv pass; the mAP change
    # is measured in docs/benchmarks.md (headline).
    fc_compression: str = "none"
    # Singular values kept per fc layer with "svd"/"svd_int8": Fast R-CNN kept
    # 1024 of fc6's 4096 and 256 of fc7's; 1/4 of the width is the default here.
    svd_rank: int = 256
    # "regress_then_nms": every window above the threshold is regressed, then
    # NMS and the per-class cap act on the regressed boxes. "nms_then_regress":
    # the official spp_test_svm_bbox_regressor.m:106-138: NMS on the proposal
    # boxes, the top max_per_class, then regression, with no second NMS.
    order: str = "regress_then_nms"

    def validate(self) -> None:
        if self.max_per_class < 0 or self.max_per_image < 0:
            raise ValueError("test.max_per_class and test.max_per_image must be >= 0 (0 = no cap)")
        if self.scorer not in SCORERS:
            raise ValueError(f"test.scorer {self.scorer!r} must be one of {', '.join(SCORERS)}")
        if self.threads < 0:
            raise ValueError("test.threads must be >= 0 (0 = the free cores)")
        if self.fc_compression not in FC_COMPRESSIONS:
            raise ValueError(f"test.fc_compression {self.fc_compression!r} must be one of "
                             f"{', '.join(FC_COMPRESSIONS)}")
        if self.svd_rank <= 0:
            raise ValueError("test.svd_rank must be positive")
        if self.order not in TEST_ORDERS:
            raise ValueError(f"test.order {self.order!r} must be one of {', '.join(TEST_ORDERS)}")


@dataclass(frozen=True)
class RCNNConfig:
    # R-CNN mode: crops get 16 px of context before warping (Girshick et al.).
    context_pad: int = 16
    # Warped crop size fed to the conv layers.
    crop_size: int = 224


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    proposals: ProposalConfig = field(default_factory=ProposalConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    svm: SVMConfig = field(default_factory=SVMConfig)
    bbox: BBoxConfig = field(default_factory=BBoxConfig)
    test: TestConfig = field(default_factory=TestConfig)
    rcnn: RCNNConfig = field(default_factory=RCNNConfig)
    # "spp" (this paper) or "rcnn" (per-window warped crops, for comparison).
    mode: str = "spp"
    # Seeds every random choice (sampling, init, mining order).
    seed: int = 0
    # Where the conv layers and fine-tuning run: "auto" (CUDA when available),
    # "cpu" or "cuda[:N]". Pooling, SVMs and box regression stay on the CPU.
    device: str = "auto"
    # Where logs, stage checkpoints and the model file go.
    workdir: str = "runs/default"
    # Where proposal and feature caches go ("" = <workdir>/cache). Runs that
    # share it share proposals and conv5 maps (entries are keyed by parameters).
    cache_dir: str = ""

    def cache_root(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else Path(self.workdir) / "cache"

    def split_search(self, split: str) -> ProposalConfig:
        """The search ``split`` gets: the training search (``proposals.train_max_side``) for
        ``data.train_split`` and ``data.val_split``, as training computes them; ``max_side`` otherwise."""
        training = split in (self.data.train_split, self.data.val_split)
        return self.proposals.for_training() if training else self.proposals

    def validate(self) -> None:
        if self.mode not in ("spp", "rcnn"):
            raise ValueError(f"mode {self.mode!r} must be spp or rcnn")
        if self.finetune.conv_layers > 0 and self.mode != "spp":
            raise ValueError("finetune.conv_layers is for SPP-net (mode spp): R-CNN mode's crops are not "
                             "pooled from one map")
        if not (self.device in ("auto", "cpu") or self.device.startswith("cuda")):
            raise ValueError(f"device {self.device!r} must be auto, cpu or cuda[:N]")

    def torch_device(self):
        """The torch.device that ``device`` names ("auto": CUDA if available)."""
        from .devices import resolve_device  # here, not at the top: loading a config needs no torch
        return resolve_device(self.device)


def load_detector_config(path: str | os.PathLike | None = None,
                         overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file, then ``key=value`` overrides (a retired key is an error with its reason)."""
    return load_config(Config, path, overrides, RETIRED_KEYS)


# Config sections a test run may change (``key=value`` on tools/test.py and
# tools/detect.py): where the data is, the windows, the scales and the
# test-time thresholds. The rest is what the model's weights were trained with.
TEST_TIME_SECTIONS = ("data", "proposals", "features", "test")
# Single keys of other sections a test run may change: the window -> cell
# rules act at test time too, so they can be screened on a trained model
# (which was trained with its own rule: a screen, not a retrained model).
TEST_TIME_KEYS = {"pool": ("window_margin", "window_scaling")}


def with_test_overrides(cfg: Config, overrides: list[str] | None) -> Config:
    """A variant of a model's config with test-time ``key=value`` overrides applied.

    Only :data:`TEST_TIME_SECTIONS` and :data:`TEST_TIME_KEYS` may change;
    anything else is an error naming the key.
    """
    tree = parse_overrides(overrides)
    fixed = sorted([k for k in tree if k not in TEST_TIME_SECTIONS and k not in TEST_TIME_KEYS]
                   + [f"{k}.{sub}" for k in TEST_TIME_KEYS if isinstance(tree.get(k), dict)
                      for sub in tree[k] if sub not in TEST_TIME_KEYS[k]])
    if fixed:
        raise ConfigError(f"command line: {', '.join(fixed)} cannot change at test time (the model was "
                          f"trained with it); test-time sections are {', '.join(TEST_TIME_SECTIONS)}")
    return from_dict(Config, merge(to_dict(cfg), tree), "command line") if tree else cfg
