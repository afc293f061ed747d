"""Image-centric mini-batches (Fast R-CNN): images first, then windows from those images.

Each mini-batch draws ``images_per_batch`` images uniformly, without
replacement, from the images with a labelled window, then from each image
its share of the batch: ``fg_fraction`` positives split among the drawn
images that have positives, the rest background split among those that have
background, uniformly over all of that image's windows of the kind (without
replacement where the image has enough, with replacement where it has fewer
than its share, so every batch holds the same number of positives). A draw
with no positive or no background window at all is drawn again. Nothing is
capped away beforehand: every labelled window of every image may be drawn at
every step.

The sampler holds each image's labels (a few integers per window); the
pooled features of a draw are the caller's, ``batch_size`` rows of them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from .fc_finetune import WindowLabels


@dataclass(frozen=True)
class WindowDraw:
    """One mini-batch: the drawn images, each one's window indices, and the windows' labels."""

    images: np.ndarray  # int64 [M] indices into the sampler's images
    windows: tuple[np.ndarray, ...]  # per drawn image: int64 indices into its windows, fg then bg
    labels: np.ndarray  # int64 [B], in image then window order; 0 = background


@dataclass(frozen=True)
class WindowUse:
    """How much of the labelled windows training took (``train_report.json``)."""

    distinct_windows: int  # windows some mini-batch took at least once
    eligible_windows: int  # labelled windows (fg or bg) of all images
    images: int  # images the distinct windows came from
    eligible_images: int  # images with at least one labelled window

    def as_dict(self) -> dict:
        return asdict(self)


def window_use(used: np.ndarray, sizes: Sequence[int]) -> WindowUse:
    """Use of labelled windows: ``used`` [sum(sizes)] flags each window, image by image
    (``sizes``: each image's labelled windows)."""
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    counts = np.concatenate([[0], np.cumsum(used)])
    per_image = counts[offsets[1:]] - counts[offsets[:-1]]
    return WindowUse(distinct_windows=int(used.sum()), eligible_windows=int(offsets[-1]),
                     images=int((per_image > 0).sum()), eligible_images=int((np.asarray(sizes) > 0).sum()))


def shares(total: int, parts: int) -> np.ndarray:
    """``total`` split into ``parts`` near-equal counts (the first ones one larger)."""
    return np.full(parts, total // parts) + (np.arange(parts) < total % parts)


class ImageCentricSampler:
    """Mini-batches of ``batch_size`` windows from ``images_per_batch`` images at a time.

    Args:
        labels: each image's labelled windows (indices into that image's windows).
        rng: the only source of randomness: the same seed draws the same batches.
    Raises:
        ValueError: no draw of ``images_per_batch`` images holds both positive and background windows.
    """

    def __init__(self, labels: Sequence[WindowLabels], batch_size: int, fg_fraction: float,
                 images_per_batch: int, rng: np.random.Generator):
        self.labels = list(labels)
        self.rng = rng
        self.has_fg = np.array([len(lab.fg_index) > 0 for lab in self.labels], dtype=bool)
        self.has_bg = np.array([len(lab.bg_index) > 0 for lab in self.labels], dtype=bool)
        self.usable = np.flatnonzero(self.has_fg | self.has_bg)
        self.images_per_batch = min(images_per_batch, len(self.usable))
        both = (self.has_fg & self.has_bg).any() or (self.images_per_batch > 1 and self.has_fg.any()
                                                     and self.has_bg.any())
        if not both:
            raise ValueError(f"fine-tuning needs positive and background windows in the images of a mini-batch; "
                             f"{len(self.labels)} images have {int(self.has_fg.sum())} with positives and "
                             f"{int(self.has_bg.sum())} with background (check proposals and IoU thresholds)")
        self.n_fg = max(1, round(batch_size * fg_fraction))
        self.n_bg = batch_size - self.n_fg
        self.sizes = [len(lab.fg_index) + len(lab.bg_index) for lab in self.labels]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        self.used = np.zeros(self.offsets[-1], dtype=bool)  # one flag per labelled window

    def draw(self) -> WindowDraw:
        while True:
            images = self.rng.choice(self.usable, self.images_per_batch, replace=False)
            with_fg, with_bg = self.has_fg[images], self.has_bg[images]
            if with_fg.any() and with_bg.any():
                break
        fg_shares, bg_shares = np.zeros(len(images), np.int64), np.zeros(len(images), np.int64)
        fg_shares[with_fg], bg_shares[with_bg] = shares(self.n_fg, with_fg.sum()), shares(self.n_bg, with_bg.sum())
        windows, labels = [], []
        for i, n_fg, n_bg in zip(images, fg_shares, bg_shares):
            lab, offset = self.labels[i], self.offsets[i]
            fg, bg = _pick(self.rng, len(lab.fg_index), n_fg), _pick(self.rng, len(lab.bg_index), n_bg)
            self.used[offset + fg] = True
            self.used[offset + len(lab.fg_index) + bg] = True
            windows.append(np.concatenate([lab.fg_index[fg], lab.bg_index[bg]]))
            labels.append(np.concatenate([lab.fg_labels[fg], np.zeros(n_bg, np.int64)]))
        return WindowDraw(images.astype(np.int64), tuple(windows), np.concatenate(labels))

    def use(self) -> WindowUse:
        """Windows the draws so far took, out of every image's labelled windows."""
        return window_use(self.used, self.sizes)


def _pick(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """k of range(n), uniformly: without replacement where n allows."""
    return rng.choice(n, k, replace=n < k)
