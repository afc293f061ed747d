"""Datasets: one small interface (:class:`Dataset`), VOC and COCO loaders, a synthetic VOC set.

Every loader yields :class:`~detector.records.ImageRecord` with boxes already in
the project's 0-based continuous x1, y1, x2, y2 convention.

The names below are imported from their modules on first use: a tool that
needs only ``detector.data.ids`` or ``voc_writer`` (the torch-free ONNX
runtime writes pseudo-labels) does not pull in pycocotools.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Sequence

DATASET_FORMATS = ("voc", "coco")
# name -> the submodule that defines it (loaded by __getattr__ on first use).
_LAZY = {"Dataset": "base", "DatasetError": "base", "InMemoryDataset": "base", "report_dropped_classes": "base",
         "COCODataset": "coco", "coco_category_ids": "coco", "coco_image_ids": "coco",
         "voc_to_coco_dict": "coco", "make_synthetic_voc": "synthetic", "VOC_CLASSES": "voc",
         "VOCDataset": "voc"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "COCODataset", "DATASET_FORMATS", "Dataset", "DatasetError", "InMemoryDataset", "VOCDataset",
    "VOC_CLASSES", "coco_category_ids", "coco_image_ids", "load_dataset", "make_synthetic_voc",
    "report_dropped_classes", "voc_to_coco_dict",
]


def load_dataset(root: str | os.PathLike, split: str, format: str = "voc",
                 class_names: Sequence[str] | None = None, annotations: str = "",
                 images: str = "", require_images: bool = True, drop_other_classes: bool = False) -> Dataset:
    """Open ``split`` of the dataset at ``root`` (the fields of ``DataConfig``).

    Args:
        root: VOC: the VOC-layout folder. COCO: the folder that relative
            ``annotations`` and ``images`` paths are resolved against.
        split: VOC: ImageSets/Main/<split>.txt. COCO: replaces ``{split}`` in
            ``annotations`` and ``images``.
        format: "voc" or "coco".
        class_names: label order; None or empty: discovered from the data.
        annotations: COCO only, the JSON file (may contain ``{split}``); required.
        images: COCO only, the image folder (may contain ``{split}``); default ``root``.
        require_images: False when only the annotations are needed (evaluation):
            VOC image files are then neither looked up nor required.
        drop_other_classes: VOC only: objects of classes not in ``class_names`` are
            left out (``dataset.dropped_classes``) instead of an error. COCO always
            leaves out the categories not in ``class_names``.
    """
    from .base import DatasetError
    from .coco import COCODataset
    from .voc import VOCDataset

    root = Path(root)
    names = tuple(class_names) if class_names else None
    if format == "voc":
        return VOCDataset(root, split=split, class_names=names, require_images=require_images,
                          drop_other_classes=drop_other_classes)
    if format == "coco":
        if not annotations:
            raise DatasetError(root, "COCO format needs the annotations JSON path (data.annotations)")
        ann = root / annotations.replace("{split}", split)
        img_dir = root / images.replace("{split}", split) if images else root
        return COCODataset(ann, img_dir, class_names=names, split=split, require_images=require_images)
    raise DatasetError(root, f"unknown dataset format {format!r}; expected one of {', '.join(DATASET_FORMATS)}")
