"""Classification examples: an ImageFolder layout, or the boxes of a VOC/COCO detection set.

An :class:`Example` is an image file, a label and, for crops of a detection
set, the box to cut (already grown by the context and clipped to the image).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..data import DatasetError, load_dataset
from ..images import is_image_file, read_image
from .config import ClassifyDataConfig


@dataclass(frozen=True)
class Example:
    path: Path
    label: int
    # (x1, y1, x2, y2) integer pixel bounds of the crop, or None for the whole image.
    box: tuple[int, int, int, int] | None = None


@dataclass(frozen=True)
class ClassificationSet:
    class_names: tuple[str, ...]
    examples: tuple[Example, ...]
    # Where it came from, for messages and reports ("<root> <split>").
    name: str

    def counts(self) -> list[int]:
        """Examples per class, in label order."""
        return np.bincount([e.label for e in self.examples], minlength=len(self.class_names)).tolist()


def load_classification_set(cfg: ClassifyDataConfig, split: str,
                            class_names: Sequence[str] | None = None, limit_per_class: int = 0) -> ClassificationSet:
    """The examples of ``split``; ``class_names`` fixes the label order (a model's),
    else ``cfg.class_names`` or what the data has."""
    names = tuple(class_names or cfg.class_names) or None
    if cfg.format == "folder":
        data = _load_folder(Path(cfg.root) / split, names)
    else:
        data = _load_crops(cfg, split, names)
    if not data.examples:
        raise DatasetError(f"{cfg.root} {split}", "no examples (no images, or every box below "
                                                   f"data.min_box_side = {cfg.min_box_side} px)")
    return _cap_per_class(data, limit_per_class) if limit_per_class else data


def _load_folder(root: Path, names: tuple[str, ...] | None) -> ClassificationSet:
    """root/<class>/<image>: one class per sub-folder (torchvision's ImageFolder)."""
    if not root.is_dir():
        raise DatasetError(root, "no such folder (the folder format wants <root>/<split>/<class>/<images>)")
    found = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not found:
        raise DatasetError(root, "no class folders (the folder format wants <root>/<split>/<class>/<images>)")
    unknown = sorted(set(found) - set(names)) if names else []
    if unknown:
        raise DatasetError(root, f"class folder(s) {', '.join(unknown)} not among the classes "
                                 f"{', '.join(names)}")
    names = names or tuple(found)
    examples = [Example(path, label)
                for label, name in enumerate(names) if (root / name).is_dir()
                for path in sorted((root / name).iterdir()) if path.is_file() and is_image_file(path)]
    return ClassificationSet(names, tuple(examples), str(root))


def _load_crops(cfg: ClassifyDataConfig, split: str, names: tuple[str, ...] | None) -> ClassificationSet:
    """Every non-difficult box of the split as an example of its class."""
    dataset = load_dataset(cfg.root, split, format=cfg.format, class_names=names,
                           annotations=cfg.annotations, images=cfg.images, drop_other_classes=bool(names))
    examples = []
    for record in dataset:
        for box, label, difficult in zip(record.boxes, record.labels, record.difficult):
            if difficult or min(box[2] - box[0], box[3] - box[1]) < cfg.min_box_side:
                continue
            examples.append(Example(record.path, int(label),
                                    grow_box(box, cfg.context, record.width, record.height)))
    return ClassificationSet(tuple(dataset.class_names), tuple(examples), f"{cfg.root} {split}")


def grow_box(box: np.ndarray, context: float, width: int, height: int) -> tuple[int, int, int, int]:
    """A box (continuous x1, y1, x2, y2) grown by ``context`` x its side on every
    edge, rounded outwards to whole pixels and clipped to the image."""
    x1, y1, x2, y2 = (float(v) for v in box)
    dx, dy = context * (x2 - x1), context * (y2 - y1)
    return (max(0, int(np.floor(x1 - dx))), max(0, int(np.floor(y1 - dy))),
            min(width, int(np.ceil(x2 + dx))), min(height, int(np.ceil(y2 + dy))))


def _cap_per_class(data: ClassificationSet, limit: int) -> ClassificationSet:
    """At most ``limit`` examples of each class, the first in file order."""
    kept, seen = [], [0] * len(data.class_names)
    for e in data.examples:
        if seen[e.label] < limit:
            kept.append(e)
            seen[e.label] += 1
    return ClassificationSet(data.class_names, tuple(kept), data.name)


def read_examples(examples: Sequence[Example]) -> list[np.ndarray]:
    """RGB uint8 pixels [H, W, 3] of each example (its crop). A detection set's crops
    of one image come in a row: the image is decoded once and only the crops are kept."""
    out, last_path, image = [], None, None
    for e in examples:
        if e.path != last_path:
            image, last_path = read_image(e.path), e.path
        if e.box is None:
            out.append(image)
        else:
            x1, y1, x2, y2 = e.box
            out.append(np.ascontiguousarray(image[y1:y2, x1:x2]))
    return out
