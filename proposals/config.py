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

All methods then apply min_size, dedupe and the max_windows cap.
"""
from __future__ import annotations

from dataclasses import dataclass

class ProposalError(ValueError):
    """Proposals could not be computed or read; the message names the file or image."""


METHODS = ("opencv_fast", "opencv_quality", "opencv_single", "selectivesearch", "precomputed")


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
