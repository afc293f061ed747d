"""COCO-format data: a loader through pycocotools, and any dataset as COCO ground truth.

Box convention: COCO stores [x, y, width, height] in continuous 0-based pixel
coordinates; they are converted here, once, to x1, y1, x2, y2 = x, y, x + w,
y + h (no +1: COCO boxes are already continuous).

Id conventions (shared by the loader, :func:`voc_to_coco_dict` and whatever
writes COCO results, through :func:`coco_image_ids` and
:func:`coco_category_ids`):

- ``ImageRecord.image_id`` of a COCO image is ``str(coco image id)``.
- In COCO ground truth built from a dataset, an image's id is ``int(image_id)``
  when every image id of the dataset is a canonical decimal integer
  (``str(int(i)) == i``, as in COCO data, so results keep the original ids),
  otherwise its position + 1 (VOC's "000005", "2008_000001").
- Category ids are the dataset's ``label_to_category_id`` when it has one (a
  :class:`COCODataset` keeps the file's ids, so results match the original
  JSON), otherwise label + 1 (COCO reserves 0).
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
from pycocotools.coco import COCO

from ..images import ImageReadError, image_size
from ..records import ImageRecord
from .base import Dataset, DatasetError, InMemoryDataset, format_problems
from .ids import relative_path_problem

logger = logging.getLogger(__name__)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def coco_problems(data: dict) -> list[str]:
    """Every entry of a COCO instances dict that would be dropped, misread or crash, one line each."""
    problems: list[str] = []
    cat_ids, img_ids = set(), set()
    for k, c in enumerate(data["categories"]):
        if not isinstance(c, dict) or not _is_int(c.get("id")):
            problems.append(f"categories[{k}]: no integer 'id'")
            continue
        cat_ids.add(c["id"])
        if not isinstance(c.get("name"), str) or not c["name"]:
            problems.append(f"categories[{k}] (id {c['id']}): no 'name'")
    for k, im in enumerate(data["images"]):
        if not isinstance(im, dict) or not _is_int(im.get("id")):
            problems.append(f"images[{k}]: no integer 'id' (got {im.get('id') if isinstance(im, dict) else im!r})")
            continue
        img_ids.add(im["id"])
        for side in ("width", "height"):
            if side in im and im[side] is not None and not (_is_number(im[side]) and im[side] >= 0):
                problems.append(f"images[{k}] (id {im['id']}): {side} {im[side]!r} is not a size in pixels")
        if not isinstance(im.get("file_name"), str) or not im["file_name"]:
            problems.append(f"images[{k}] (id {im['id']}): no 'file_name'")
        elif problem := relative_path_problem(im["file_name"]):  # it is joined onto the image folder
            problems.append(f"images[{k}] (id {im['id']}): file_name {im['file_name']!r} {problem}; "
                            "it must lie inside the image folder")
    for k, a in enumerate(data["annotations"]):
        if not isinstance(a, dict):
            problems.append(f"annotations[{k}]: not an object")
            continue
        where = f"annotations[{k}] (id {a.get('id')})"
        iid = a.get("image_id")
        if isinstance(iid, str):
            problems.append(f"{where}: image_id {iid!r} is a string; COCO image ids are integers")
        elif not _is_int(iid):
            problems.append(f"{where}: no integer image_id")
        elif iid not in img_ids:
            problems.append(f"{where}: image_id {iid} is not in images")
        if a.get("category_id") not in cat_ids:
            problems.append(f"{where}: category_id {a.get('category_id')!r} is not in categories")
        bbox = a.get("bbox")
        if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            problems.append(f"{where}: bbox {bbox!r} is not four finite numbers [x, y, w, h]")
    return problems


def _load_coco(annotation_json: Path) -> COCO:
    if not annotation_json.is_file():
        raise DatasetError(annotation_json, "annotation file missing")
    try:
        data = json.loads(annotation_json.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(annotation_json, f"malformed JSON ({e})") from None
    if not isinstance(data, dict) or not all(k in data for k in ("images", "annotations", "categories")):
        raise DatasetError(annotation_json, "not a COCO file: needs images, annotations and categories")
    problems = coco_problems(data)
    if problems:
        raise DatasetError(annotation_json, format_problems(problems, "invalid COCO entries"))
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        try:
            coco.createIndex()
        except (KeyError, TypeError) as e:
            raise DatasetError(annotation_json, f"malformed COCO entry (missing {e})") from None
    return coco


class COCODataset(InMemoryDataset):
    """A COCO-format JSON plus its image folder as a :class:`~detector.data.base.Dataset`.

    Args:
        annotation_json: COCO instances file (images, annotations, categories).
        images_dir: folder holding each image's ``file_name``.
        class_names: None: all category names in category-id order. Otherwise
            the classes to keep, in label order; each must be a category name
            and annotations of the other categories are left out (counted per
            category name in ``dropped_classes``).
        name: dataset name for cache keys; default the JSON file's stem.
        split: the split's name; default the JSON file's stem.
        require_images: False reads the annotations only (evaluation).

    ``iscrowd`` annotations become ``difficult`` (ignored by evaluation);
    zero-area boxes are dropped and boxes are clipped to the image, both
    logged. Attributes ``label_to_category_id`` (tuple, label -> COCO id),
    ``category_id_to_label`` (dict) and ``coco`` (the pycocotools object) are
    kept for writing and scoring COCO results.
    """

    def __init__(self, annotation_json: str | os.PathLike, images_dir: str | os.PathLike,
                 class_names: Sequence[str] | None = None, name: str | None = None,
                 split: str | None = None, require_images: bool = True):
        annotation_json, images_dir = Path(annotation_json), Path(images_dir)
        coco = _load_coco(annotation_json)
        cats = sorted(coco.loadCats(coco.getCatIds()), key=lambda c: c["id"])
        id_of_name = {c["name"]: c["id"] for c in cats}
        if class_names is None:
            class_names = [c["name"] for c in cats]
        missing = [n for n in class_names if n not in id_of_name]
        if missing:
            raise DatasetError(annotation_json, f"class name(s) {', '.join(missing)} are not categories; "
                                                f"categories: {', '.join(id_of_name)}")
        self.coco = coco
        self.label_to_category_id = tuple(id_of_name[n] for n in class_names)
        self.category_id_to_label = {cid: i for i, cid in enumerate(self.label_to_category_id)}

        name_of_id = {c["id"]: c["name"] for c in cats}
        records, dropped, degenerate = [], Counter(), 0
        for img_id in sorted(coco.getImgIds()):
            info = coco.imgs[img_id]
            path = images_dir / str(info.get("file_name", ""))
            if require_images and not path.is_file():
                raise DatasetError(path, f"image file missing for COCO image id {img_id}")
            width, height = int(info.get("width") or 0), int(info.get("height") or 0)
            if width <= 0 or height <= 0:
                try:
                    width, height = image_size(path)
                except ImageReadError as e:
                    raise DatasetError(annotation_json, f"image {img_id} has no size ({e})") from None
            boxes, labels, crowd = [], [], []
            for ann in coco.imgToAnns.get(img_id, []):
                label = self.category_id_to_label.get(ann["category_id"])
                if label is None:
                    dropped[name_of_id[ann["category_id"]]] += 1
                    continue
                try:
                    x, y, w, h = (float(v) for v in ann["bbox"])
                except (KeyError, TypeError, ValueError):
                    raise DatasetError(annotation_json, f"annotation {ann.get('id')}: bad bbox "
                                                        f"{ann.get('bbox')!r}") from None
                # COCO xywh (continuous, 0-based) -> x1, y1, x2, y2; clipped to the image.
                box = [min(max(x, 0.0), width), min(max(y, 0.0), height),
                       min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)]
                if box[2] <= box[0] or box[3] <= box[1]:
                    degenerate += 1
                    continue
                boxes.append(box)
                labels.append(label)
                crowd.append(bool(ann.get("iscrowd", 0)))
            records.append(ImageRecord(image_id=str(img_id), path=path, width=width, height=height,
                                       boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                                       labels=np.asarray(labels, np.int64),
                                       difficult=np.asarray(crowd, bool)))
        if degenerate:
            logger.warning("%s: dropped %d zero-area box(es)", annotation_json, degenerate)
        super().__init__(records, class_names, name=name or annotation_json.stem,
                         split=split or annotation_json.stem, dropped_classes=dropped)


def coco_image_ids(dataset: Dataset) -> dict[str, int]:
    """image_id -> COCO integer image id, by the rule in the module docstring."""
    ids = [r.image_id for r in dataset]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{dataset.name}/{dataset.split}", "image ids are not unique")
    if all(i.isdecimal() and str(int(i)) == i for i in ids):
        return {i: int(i) for i in ids}
    return {i: k + 1 for k, i in enumerate(ids)}


def coco_category_ids(dataset: Dataset) -> tuple[int, ...]:
    """label -> COCO category id: the dataset's own ids if it has them, else label + 1."""
    ids = getattr(dataset, "label_to_category_id", None)
    return tuple(ids) if ids is not None else tuple(range(1, dataset.num_classes + 1))


def voc_to_coco_dict(dataset: Dataset) -> dict:
    """COCO-format ground truth of any dataset, in memory (for pycocotools, no temp files).

    ``difficult`` objects become ``iscrowd=1``: COCOeval then neither rewards
    nor penalises detections matched to them, the usual mapping of VOC's
    difficult flag. bbox is [x, y, w, h] of the 0-based continuous box, area
    is w * h. Load it with ``coco = COCO(); coco.dataset = d; coco.createIndex()``.
    """
    image_ids, category_ids = coco_image_ids(dataset), coco_category_ids(dataset)
    images, annotations = [], []
    for r in dataset:
        images.append({"id": image_ids[r.image_id], "file_name": r.path.name,
                       "width": int(r.width), "height": int(r.height)})
        for box, label, diff in zip(r.boxes.tolist(), r.labels.tolist(), r.difficult.tolist()):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append({"id": len(annotations) + 1, "image_id": image_ids[r.image_id],
                                "category_id": category_ids[label], "bbox": [box[0], box[1], w, h],
                                "area": w * h, "iscrowd": int(diff)})
    categories = [{"id": cid, "name": n, "supercategory": "none"}
                  for cid, n in zip(category_ids, dataset.class_names)]
    return {"info": {"description": f"{dataset.name} {dataset.split}"}, "licenses": [],
            "images": images, "annotations": annotations, "categories": categories}
