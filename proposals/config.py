"""Parameters of the proposal stage (one typed record, loaded by detector.configio).

Which fields each method reads (a field a method does not read is listed here,
not silently accepted elsewhere):

| method          | reads                                                   |
|-----------------|---------------------------------------------------------|
| opencv_fast     | base_k, inc_k, sigma, seed, max_side, upscale            |
| opencv_quality  | base_k, inc_k, sigma, seed, max_side, upscale            |
| opencv_single   | base_k (the one k), sigma, seed, max_side, upscale       |
| selectivesearch | base_k (the package's "scale"), sigma, segment_min_size, |
|                 | max_side, upscale                                        |
| precomputed     | path                                                     |
| dense           | dense_scales_per_octave, dense_aspects, dense_stride     |
| union           | what opencv_fast reads, then what dense reads            |

``train_max_side`` (when >= 0) stands in for max_side on the training
splits (``ProposalConfig.for_training``). All methods then apply min_size,
dedupe and the max_windows cap. ``union``
keeps the selective search windows (fast mode) first and fills the rest of
``max_windows`` with the dense grid (``proposals.dense``).

``min_recall`` and ``auto*`` are not search parameters (``auto`` replaces the
section by the setting it chooses, ``proposals.tune``): training compares the windows with
the training split's ground truth and warns below it (``proposals.fit``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

class ProposalError(ValueError):
    """Proposals could not be computed or read; the message names the file or image."""


METHODS = ("opencv_fast", "opencv_quality", "opencv_single", "selectivesearch", "precomputed", "dense",
           "union")
# Fields only the dense grid reads (they key the cache only for the methods that read them).
DENSE_FIELDS = ("dense_scales_per_octave", "dense_aspects", "dense_stride")
DENSE_METHODS = ("dense", "union")


@dataclass(frozen=True)
class ProposalConfig:
    # Selective search "fast mode" is what SPP-net and R-CNN scored (~2000 windows).
    method: str = "opencv_fast"
    # SPP-net/R-CNN used about 2000 windows per image.
    max_windows: int = 2000
    # R-CNN drops windows with a side under 20 px: too small to classify.
    min_size: float = 20.0
    # Longer image side is downscaled to this before the search (0 = never).
    # Search time grows faster than the pixel count (OpenCV's grouping loop is
    # quadratic in the number of initial segments), so 500 px (the size of a
    # VOC image) bounds a 12 Mpx photo to about a second; with base_k/inc_k
    # = 100 below it matches or beats full-resolution fast mode's recall@0.5
    # in less time (docs/benchmarks_proposals.md).
    max_side: int = 500
    # The training splits' search only: their longer side before the search
    # (-1 = max_side). Test, detect and the model file keep max_side. Training
    # needs windows to label and mine, testing needs windows to keep: on BCCD,
    # training on a 500 px search and testing on the full-resolution one
    # halves the training's search (docs/benchmarks.md). `sppnet propose
    # --config` gives a training split this search too.
    train_max_side: int = -1
    # Upscale factor applied before the search (>1 helps small dense objects);
    # max_side, when set, still caps the longer side after upscaling.
    upscale: float = 1.0
    # Worker processes for a dataset split (0 = all cores).
    workers: int = 0
    # Path of precomputed boxes (.mat from R-CNN/fast-rcnn, or .npz/.json), method "precomputed".
    path: str = ""
    # Felzenszwalb-Huttenlocher k of the first segmentation (larger k, larger
    # segments; the selectivesearch package calls it "scale"). OpenCV's default
    # is 150 at full resolution; a downscaled image needs a smaller k for the
    # same segments, and 100 at max_side 500 lifted BCCD recall@0.5 from 0.76
    # to 0.81 (raccoon stays at 1.0). Uijlings et al. 2013 used k = 50..150.
    base_k: int = 100
    # Step between the k values: fast mode uses base_k + {0, 1, 2} * inc_k,
    # quality mode base_k + {0..4} * inc_k (OpenCV's default step is 150; 100
    # keeps the same ratio to base_k as OpenCV's 150/150).
    inc_k: int = 100
    # Gaussian smoothing before segmentation; 0.8 is Felzenszwalb's and every
    # selective search implementation's default.
    sigma: float = 0.8
    # selectivesearch package only: smallest segment in pixels (its default, 50).
    segment_min_size: int = 50
    # OpenCV ranks windows by rand() * level with the C library's rand(); seeding
    # it per image makes the order reproducible whatever the worker or image order.
    seed: int = 0
    # Dense grid (methods dense and union): window sizes per doubling of size.
    # 3 puts neighbouring sizes 26% apart, so any object is within 13% of a
    # grid size: IoU >= 0.88 from size alone. On the generated defect set
    # (proposals.fit's docs) 3 reached recall@0.5 0.94 at 2000 windows, 2 only 0.82.
    dense_scales_per_octave: int = 3
    # Width / height of the grid's windows. Scratches, cracks and text lines
    # run to 8:1; a square grid misses them (a 100 x 10 box has IoU 0.4 with
    # the best 4:1 window), hence 1/8 to 8 in factors of 2.
    dense_aspects: list[float] = field(default_factory=lambda: [0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0])
    # Spacing of the grid in units of the window's side: 0.2 leaves an object
    # at most 1/10 of a side from a grid position (IoU >= 0.68 from position
    # alone); the ranking then picks which positions the cap keeps.
    dense_stride: float = 0.2
    # Training warns when the windows reach fewer than this fraction of the
    # training split's objects at IoU 0.5: every later stage is capped at it.
    # YOLOv5's AutoAnchor refits its anchors below a best possible recall of 0.98;
    # selective search on VOC reaches ~0.98 at 2000 windows (Uijlings et al.),
    # so 0.9 flags data that the search does not fit, not its usual misses.
    min_recall: float = 0.9
    # Training tries a few settings on a sample of the training split first and
    # keeps the cheapest whose recall@0.5 reaches auto_target (proposals.tune);
    # the choice replaces this section in the model's config, so test and
    # detect search the same way. Off by default: a known setting needs no trial.
    auto: bool = False
    # The recall the tuner asks for: above min_recall, so a tuned setting does not warn.
    auto_target: float = 0.95
    # Training images tried per setting: 20 keep the trial under a minute at
    # ~0.5 s per search while holding ~50 objects on the small sets.
    auto_sample: int = 20

    def for_training(self) -> "ProposalConfig":
        """The search the training splits use: ``max_side`` replaced by ``train_max_side`` when set."""
        if self.train_max_side < 0:
            return self
        return dataclasses.replace(self, max_side=self.train_max_side, train_max_side=-1)

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"proposals.method {self.method!r} is not one of {', '.join(METHODS)}")
        if self.max_windows <= 0:
            raise ValueError("proposals.max_windows must be positive")
        if self.method == "precomputed" and not self.path:
            raise ValueError("proposals.method precomputed needs proposals.path")
        if self.min_size < 0:
            raise ValueError("proposals.min_size must be >= 0")
        if self.max_side < 0:
            raise ValueError("proposals.max_side must be >= 0 (0 = never downscale)")
        if self.train_max_side < -1:
            raise ValueError("proposals.train_max_side must be >= -1 (-1 = max_side, 0 = never downscale)")
        if self.auto and self.train_max_side >= 0:
            raise ValueError("proposals.auto chooses the search for training and testing alike; "
                             "leave proposals.train_max_side at -1 with it")
        if self.upscale <= 0:
            raise ValueError("proposals.upscale must be positive")
        if self.workers < 0:
            raise ValueError("proposals.workers must be >= 0 (0 = all cores)")
        if self.base_k <= 0 or self.inc_k < 0:
            raise ValueError("proposals.base_k must be positive and inc_k >= 0")
        if self.sigma < 0:
            raise ValueError("proposals.sigma must be >= 0")
        if self.segment_min_size < 1:
            raise ValueError("proposals.segment_min_size must be >= 1")
        if self.dense_scales_per_octave < 1:
            raise ValueError("proposals.dense_scales_per_octave must be >= 1")
        if not self.dense_aspects or any(not a > 0 for a in self.dense_aspects):
            raise ValueError("proposals.dense_aspects must be a non-empty list of positive ratios")
        if not self.dense_stride > 0:
            raise ValueError("proposals.dense_stride must be positive")
        if not 0 <= self.min_recall <= 1:
            raise ValueError("proposals.min_recall must be in [0, 1]")
        if not 0 < self.auto_target <= 1:
            raise ValueError("proposals.auto_target must be in (0, 1]")
        if self.auto_sample < 1:
            raise ValueError("proposals.auto_sample must be >= 1")
