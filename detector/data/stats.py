"""Summary statistics of a dataset: what to look at before training on it.

Counts per class (images, objects, difficult objects), image sizes, boxes per
image and the distribution of box sizes, as a typed record plus a plain-text
report.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import Dataset

# COCO's object size buckets, by box area in pixels (cocoeval's areaRng).
SMALL_AREA = 32 ** 2
LARGE_AREA = 96 ** 2
PERCENTILES = (0, 5, 25, 50, 75, 95, 100)


@dataclass(frozen=True)
class ClassStats:
    name: str
    images: int     # images holding at least one object of the class
    objects: int    # all objects, difficult included
    difficult: int


@dataclass(frozen=True)
class DatasetStats:
    name: str
    split: str
    num_images: int
    num_objects: int
    num_difficult: int
    images_without_objects: int
    classes: tuple[ClassStats, ...]
    widths: np.ndarray           # int [num_images] image widths, pixels
    heights: np.ndarray          # int [num_images]
    boxes_per_image: np.ndarray  # int [num_images]
    box_widths: np.ndarray       # float [num_objects], pixels
    box_heights: np.ndarray      # float [num_objects]

    @property
    def box_areas(self) -> np.ndarray:
        return self.box_widths * self.box_heights

    def size_buckets(self) -> tuple[int, int, int]:
        """Objects that are (small, medium, large) by COCO's area thresholds."""
        a = self.box_areas
        medium = (a >= SMALL_AREA) & (a < LARGE_AREA)
        return int((a < SMALL_AREA).sum()), int(medium.sum()), int((a >= LARGE_AREA).sum())


def compute_dataset_stats(dataset: Dataset) -> DatasetStats:
    """Gather :class:`DatasetStats` from the records (no image is read)."""
    records = list(dataset)
    n_cls = dataset.num_classes
    empty = np.zeros(0)
    labels = np.concatenate([r.labels for r in records]) if records else empty.astype(np.int64)
    difficult = np.concatenate([r.difficult for r in records]) if records else empty.astype(bool)
    boxes = np.concatenate([r.boxes for r in records]) if records else np.zeros((0, 4), np.float32)
    images_per_class = np.zeros(n_cls, np.int64)
    for r in records:
        images_per_class[np.unique(r.labels)] += 1
    objects = np.bincount(labels, minlength=n_cls)
    diff = np.bincount(labels[difficult], minlength=n_cls)
    classes = tuple(ClassStats(name, int(images_per_class[i]), int(objects[i]), int(diff[i]))
                    for i, name in enumerate(dataset.class_names))
    per_image = np.array([len(r.boxes) for r in records], np.int64)
    return DatasetStats(
        name=dataset.name, split=dataset.split, num_images=len(records), num_objects=len(labels),
        num_difficult=int(difficult.sum()), images_without_objects=int((per_image == 0).sum()),
        classes=classes, widths=np.array([r.width for r in records], np.int64),
        heights=np.array([r.height for r in records], np.int64), boxes_per_image=per_image,
        box_widths=(boxes[:, 2] - boxes[:, 0]).astype(np.float64),
        box_heights=(boxes[:, 3] - boxes[:, 1]).astype(np.float64))


def _percentile_row(label: str, values: np.ndarray) -> str:
    if len(values) == 0:
        return f"  {label:<18} (none)"
    cells = " ".join(f"{v:8.1f}" for v in np.percentile(values, PERCENTILES))
    return f"  {label:<18} {cells}"


def format_dataset_stats(stats: DatasetStats) -> str:
    """A plain-text report of ``stats`` (one table per aspect)."""
    lines = [f"dataset {stats.name!r} split {stats.split!r}: {stats.num_images} images, "
             f"{stats.num_objects} objects ({stats.num_difficult} difficult), "
             f"{stats.images_without_objects} images without objects", "",
             f"  {'class':<18} {'images':>8} {'objects':>8} {'difficult':>9}"]
    for c in stats.classes:
        lines.append(f"  {c.name:<18} {c.images:>8} {c.objects:>8} {c.difficult:>9}")
    lines += ["", f"  {'percentile':<18} " + " ".join(f"{p:>8}" for p in PERCENTILES)]
    lines.append(_percentile_row("image width", stats.widths))
    lines.append(_percentile_row("image height", stats.heights))
    lines.append(_percentile_row("boxes per image", stats.boxes_per_image))
    lines.append(_percentile_row("box width", stats.box_widths))
    lines.append(_percentile_row("box height", stats.box_heights))
    lines.append(_percentile_row("box sqrt(area)", np.sqrt(stats.box_areas)))
    small, medium, large = stats.size_buckets()
    lines += ["", f"  box sizes (COCO buckets): small (<32^2 px) {small}, medium {medium}, "
                  f"large (>=96^2 px) {large}"]
    return "\n".join(lines)
