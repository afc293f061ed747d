"""PASCAL VOC loader: ``Annotations/*.xml`` + ``JPEGImages/`` + ``ImageSets/Main/<split>.txt``.

Works on ``VOCdevkit/VOC2007`` and on any folder in that layout. All XML files
of the split are parsed once, at construction; nothing is cached on disk, so
changing an image set or an annotation can never leave a stale cache behind
(py-faster-rcnn's pickled annotation cache crashed evaluation that way).

Box convention: VOC stores 1-based inclusive integer pixels; they are
converted here, once, to the project's 0-based continuous x1, y1, x2, y2
(see :mod:`detector.boxes`).

An id in ``ImageSets/Main/<split>.txt`` must be a plain file name (no ``/`` or
``\\``, not ``.`` or ``..``): ``../../secret`` would read
``Annotations/../../secret.xml``, outside the dataset. Such ids are a
:class:`DatasetError` naming the split file and its lines, with or without
``skip_invalid``; a ``<filename>`` that is not a plain name is ignored.

Policies for imperfect annotations (all per file, so ``skip_invalid=True``
turns them into a logged skip of that image instead of an exception):

- malformed or empty XML, a missing ``bndbox`` or coordinate, a non-numeric
  coordinate, an unknown class (when ``class_names`` is given, unless
  ``drop_other_classes``: then its objects are left out and counted), a
  degenerate box (x2 <= x1 or y2 <= y1), a missing image file:
  :class:`DatasetError`.
- a box that extends outside the image is clipped to it with a warning (real
  VOC-style data has a few such boxes, off by a pixel or two); one that is
  empty after clipping is an error.
- an image with no ``<object>`` is valid and gives empty arrays (negatives-only
  images are legitimate training data).
- a missing ``<difficult>`` means 0; a missing or zero ``<size>`` is read from
  the image header.
"""
from __future__ import annotations

import logging
import math
import os
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from ..images import IMAGE_EXTENSIONS, ImageReadError, image_size
from ..records import ImageRecord
from .base import DatasetError, InMemoryDataset, format_problems
from .ids import file_name_problem

logger = logging.getLogger(__name__)

# The 20 PASCAL VOC classes in the devkit's order (VOC 2007-2012).
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)

_COORDS = ("xmin", "ymin", "xmax", "ymax")


def collected_errors(root: Path, split: str, errors: Sequence[DatasetError]) -> DatasetError:
    """One error for every invalid annotation of a split (the only one's, when there is one)."""
    if len(errors) == 1:
        return errors[0]
    return DatasetError(root, format_problems([str(e) for e in errors],
                                              f"invalid annotation files in split {split!r}"))


@dataclass(frozen=True)
class _ParsedXML:
    """One annotation file before labels are assigned (boxes already 0-based)."""

    image_id: str
    image_path: Path
    width: int
    height: int
    names: list[str]
    boxes: np.ndarray      # float32 [N, 4], 0-based continuous, clipped
    difficult: np.ndarray  # bool [N]


def read_split_ids(root: Path, split: str) -> list[str]:
    """Image ids of ``split``: from ImageSets/Main/<split>.txt, or every annotation if
    ImageSets/Main does not exist (with a warning)."""
    main = root / "ImageSets" / "Main"
    if not main.is_dir():
        ann = root / "Annotations"
        ids = sorted(p.stem for p in ann.glob("*.xml"))
        logger.warning("%s missing: using all %d annotated images for split %r", main, len(ids), split)
        return ids
    split_file = main / f"{split}.txt"
    if not split_file.is_file():
        names = sorted(p.stem for p in main.glob("*.txt"))
        # VOC also ships per-class files (aeroplane_train.txt); list the plain splits first.
        plain = [n for n in names if "_" not in n] or names
        raise DatasetError(split_file, f"no such split file; splits available: {', '.join(plain) or 'none'}")
    # Lines are "<id>" or, in per-class files, "<id> <+1|-1|0>": take the first token.
    numbered = [(n, line.split()[0]) for n, line in enumerate(split_file.read_text().splitlines(), 1)
                if line.strip()]
    # An id becomes Annotations/<id>.xml: one like ../../secret would read outside the dataset.
    bad = [f"line {n}: image id {i!r} {problem}; an id is a file name without its extension"
           for n, i in numbered if (problem := file_name_problem(i))]
    if bad:
        raise DatasetError(split_file, bad[0] if len(bad) == 1 else format_problems(bad, "invalid image ids"))
    return [i for _, i in numbered]


def _text(node: ET.Element, tag: str) -> str | None:
    child = node.find(tag)
    return None if child is None or child.text is None else child.text.strip()


def _find_image(root: Path, image_id: str, filename: str | None, image_names: set[str] | None) -> Path:
    """JPEGImages/<filename>, else JPEGImages/<id>.<ext>; ``image_names`` lists JPEGImages
    (one directory listing instead of a stat per candidate: 5k-image splits load faster).
    ``image_names`` None: the images are not needed (evaluation), so the path is not checked.
    A ``filename`` that is not a plain file name (``../x.jpg``) is ignored: it is never in
    the listing, and unchecked it would point outside JPEGImages/."""
    if filename and file_name_problem(filename):
        filename = None
    if image_names is None:
        return root / "JPEGImages" / (filename or image_id + ".jpg")
    for name in ([filename] if filename else []) + [image_id + e for e in IMAGE_EXTENSIONS]:
        if name in image_names:
            return root / "JPEGImages" / name
    raise DatasetError(root / "JPEGImages" / (filename or image_id + ".jpg"),
                       f"image file missing for annotation {image_id!r}")


def _read_size(node: ET.Element | None) -> tuple[int, int]:
    """(width, height) from <size>, or (0, 0) when missing or unreadable."""
    if node is None:
        return 0, 0
    try:
        return int(float(_text(node, "width") or 0)), int(float(_text(node, "height") or 0))
    except ValueError:
        return 0, 0


def parse_voc_xml(xml_path: Path, root: Path, image_id: str, image_names: set[str] | None) -> _ParsedXML:
    """Parse one VOC annotation file; raises DatasetError naming ``xml_path``.

    ``image_names``: the file names in JPEGImages/ (see :func:`_find_image`).
    """
    try:
        data = xml_path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(xml_path, "annotation file missing") from None
    if not data.strip():
        raise DatasetError(xml_path, "annotation file is empty")
    try:
        tree = ET.fromstring(data)
    except ET.ParseError as e:
        raise DatasetError(xml_path, f"malformed XML ({e})") from None

    image_path = _find_image(root, image_id, _text(tree, "filename"), image_names)
    width, height = _read_size(tree.find("size"))
    if width <= 0 or height <= 0:
        try:
            width, height = image_size(image_path)
        except ImageReadError as e:
            raise DatasetError(xml_path, f"no <size> and the image header is unreadable ({e})") from None

    names, boxes, difficult, clipped = [], [], [], 0
    for k, obj in enumerate(tree.iter("object")):
        name = _text(obj, "name")
        if not name:
            raise DatasetError(xml_path, f"object {k} has no <name>")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise DatasetError(xml_path, f"object {k} ({name}) has no <bndbox>")
        values = []
        for c in _COORDS:
            text = _text(bndbox, c)
            if text is None:
                raise DatasetError(xml_path, f"object {k} ({name}) has no <{c}>")
            try:
                value = float(text)
            except ValueError:
                raise DatasetError(xml_path, f"object {k} ({name}): <{c}> is not a number: {text!r}") from None
            if not math.isfinite(value):
                raise DatasetError(xml_path, f"object {k} ({name}): <{c}> is {text!r}, not a finite number")
            values.append(value)
        xmin, ymin, xmax, ymax = values
        # VOC 1-based inclusive pixels -> 0-based continuous edges: pixel p (1-based)
        # spans [p - 1, p), so x1 = xmin - 1 and x2 = xmax (width xmax - xmin + 1).
        box = [xmin - 1.0, ymin - 1.0, xmax, ymax]
        if box[2] <= box[0] or box[3] <= box[1]:
            raise DatasetError(xml_path, f"object {k} ({name}): degenerate box "
                                         f"xmin={xmin:g} ymin={ymin:g} xmax={xmax:g} ymax={ymax:g}")
        inside = [min(max(box[0], 0.0), width), min(max(box[1], 0.0), height),
                  min(max(box[2], 0.0), width), min(max(box[3], 0.0), height)]
        if inside != box:
            if inside[2] <= inside[0] or inside[3] <= inside[1]:
                raise DatasetError(xml_path, f"object {k} ({name}): box {values} lies outside "
                                             f"the {width}x{height} image")
            clipped += 1
        names.append(name)
        boxes.append(inside)
        diff = _text(obj, "difficult")
        difficult.append(diff not in (None, "", "0"))
    if clipped:
        logger.warning("%s: %d box(es) extend outside the %dx%d image; clipped", xml_path, clipped, width, height)
    return _ParsedXML(image_id, image_path, width, height, names,
                      np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(difficult, bool))


def _keep_classes(item: _ParsedXML, class_names: Sequence[str]) -> tuple[_ParsedXML, list[str]]:
    """``item`` with only the objects of ``class_names``, and the names of those left out."""
    keep = np.array([n in class_names for n in item.names], bool)
    if keep.all():
        return item, []
    kept = replace(item, names=[n for n, k in zip(item.names, keep) if k],
                   boxes=item.boxes[keep], difficult=item.difficult[keep])
    return kept, [n for n, k in zip(item.names, keep) if not k]


class VOCDataset(InMemoryDataset):
    """A PASCAL VOC-layout folder as a :class:`~detector.data.base.Dataset`.

    Args:
        root: the folder holding Annotations/, JPEGImages/, ImageSets/Main/
            (e.g. ``VOCdevkit/VOC2007``).
        split: the image set name (``ImageSets/Main/<split>.txt``).
        class_names: the classes in label order (e.g. :data:`VOC_CLASSES`);
            None discovers them: the sorted unique names over the split's files.
        skip_invalid: log and skip images whose annotation is invalid instead
            of raising :class:`DatasetError`. Without it every invalid file of
            the split is reported in one error (up to :data:`~detector.data.base.MAX_REPORTED`
            listed), so a split with five broken files takes one run to clean.
        require_images: False reads the annotations only (evaluation needs
            no pixels): image files are neither looked up nor required.
        name: the dataset's name for cache keys; default the root folder's name.
        drop_other_classes: with ``class_names``, objects of other classes are left
            out (counted in ``dropped_classes``) instead of making their file invalid:
            evaluating a model trained on a subset of the classes (mmdetection and
            detectron2 drop them too; they are not ignore regions).
    """

    def __init__(self, root: str | os.PathLike, split: str = "trainval",
                 class_names: Sequence[str] | None = None, skip_invalid: bool = False,
                 name: str | None = None, require_images: bool = True,
                 drop_other_classes: bool = False):
        root = Path(root)
        if not (root / "Annotations").is_dir():
            raise DatasetError(root, "not a VOC-layout folder (no Annotations/ inside)")
        self.root = root
        image_dir = root / "JPEGImages"
        image_names = (set(os.listdir(image_dir)) if image_dir.is_dir() else set()) if require_images else None
        parsed: list[_ParsedXML] = []
        errors: list[DatasetError] = []
        dropped: Counter[str] = Counter()
        for image_id in read_split_ids(root, split):
            xml_path = root / "Annotations" / f"{image_id}.xml"
            try:
                item = parse_voc_xml(xml_path, root, image_id, image_names)
                if class_names is not None and drop_other_classes:
                    item, left_out = _keep_classes(item, class_names)
                    dropped.update(left_out)
                elif class_names is not None:
                    unknown = sorted(set(item.names) - set(class_names))
                    if unknown:
                        raise DatasetError(xml_path, f"unknown class name(s) {', '.join(unknown)}; "
                                                     f"expected one of {', '.join(class_names)}")
            except DatasetError as e:
                if not skip_invalid:
                    errors.append(e)
                else:
                    logger.warning("skipping invalid annotation: %s", e)
                continue
            parsed.append(item)
        if errors:
            raise collected_errors(root, split, errors)

        names = tuple(class_names) if class_names is not None else tuple(
            sorted({n for item in parsed for n in item.names}))
        if len(set(names)) != len(names):
            raise DatasetError(root, f"class_names has duplicates: {names}")
        label_of = {n: i for i, n in enumerate(names)}
        records = [ImageRecord(image_id=p.image_id, path=p.image_path, width=p.width, height=p.height,
                               boxes=p.boxes, labels=np.asarray([label_of[n] for n in p.names], np.int64),
                               difficult=p.difficult)
                   for p in parsed]
        super().__init__(records, names, name=name or root.resolve().name, split=split,
                         dropped_classes=dropped)
