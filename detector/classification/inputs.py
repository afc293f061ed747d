"""Images to network inputs: warped to a fixed square, or at their own size in size buckets.

``fixed`` is the paper's single- and multi-size training (Sec. 3.1.2: the
whole crop resized to 224 or 180); ``own`` keeps each image's aspect: the
shorter side becomes the size and the longer one is rounded to a multiple
of ``bucket_step``, so images of similar shape share a bucket (one batch
shape) without padding.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import cv2
import numpy as np
import torch
from torch import Tensor

from ..features.backbones import Preprocess
from ..features.conv_maps import scale_factor
from ..images import ImageTooSmallError
from .config import ClassifyInputConfig


def input_shape(height: int, width: int, size: int, cfg: ClassifyInputConfig) -> tuple[int, int]:
    """(height, width) in pixels of an image's network input at ``size``."""
    if cfg.mode == "fixed":
        return size, size
    factor = scale_factor(height, width, size, cfg.max_size)
    step = cfg.bucket_step

    def snap(side: float) -> int:
        return max(step, int(round(side * factor / step)) * step)
    return snap(height), snap(width)


def warp(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize an RGB uint8 image to exactly height x width (area when shrinking)."""
    shrink = height * width < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def network_inputs(images: Sequence[np.ndarray], size: int, cfg: ClassifyInputConfig,
                   preprocess: Preprocess, min_side: int) -> list[Tensor]:
    """Each image at ``size``, preprocessed: [3, h, w] float32 tensors.

    Raises:
        ImageTooSmallError: ``size`` is below the backbone's smallest input.
    """
    if size < min_side:
        raise ImageTooSmallError(f"input size {size} px is below the backbone's smallest input "
                                 f"({min_side} px, a 1x1 conv map); raise input.sizes")
    return [preprocess.apply(warp(im, *input_shape(im.shape[0], im.shape[1], size, cfg))) for im in images]


def size_batches(shapes: Sequence[tuple[int, ...]], batch_size: int,
                 generator: torch.Generator | None = None) -> list[list[int]]:
    """Indices grouped into batches of one shape each, at most ``batch_size`` long.

    With ``generator``: shuffled within each shape and batches in random
    order (training); without: in index order (evaluation).
    """
    buckets: dict[tuple[int, ...], list[int]] = defaultdict(list)
    order = range(len(shapes)) if generator is None else torch.randperm(len(shapes), generator=generator).tolist()
    for i in order:
        buckets[tuple(shapes[i])].append(i)
    batches = [idx[k:k + batch_size] for idx in buckets.values() for k in range(0, len(idx), batch_size)]
    if generator is not None:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return batches
