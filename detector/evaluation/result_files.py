"""Writers and readers for detection result files: VOC comp4 text, COCO JSON.

VOC (devkit "comp4", detections trained on any data): one file per class,
``<prefix>_det_<split>_<class>.txt``, one line per detection:
``image_id score x1 y1 x2 y2`` in the devkit's 1-based inclusive pixels. Our
boxes are continuous 0-based (the VOC loader did x1 = xmin - 1, x2 = xmax),
so the writer does the inverse, (x1 + 1, y1 + 1, x2, y2), and the reader undoes
it. Numbers are written with the shortest text that reads back exactly.

COCO: a JSON list of ``{"image_id", "category_id", "bbox": [x, y, w, h],
"score"}`` (COCO's xywh, converted here). Image ids: our ids are strings; the
writer stores an id that is a canonical decimal integer ("42", not "0042") as
a JSON number, as COCO does, and any other id as a string; the reader turns
numbers back into their decimal string and keeps strings as they are, so the
keys of what it returns always compare equal to ``ImageRecord.image_id``.
Both take an optional ``image_ids`` mapping (image_id -> int, e.g.
``detector.data.coco_image_ids(dataset)``, which numbers VOC ids by position)
to write and read files that use the ground truth's integer ids instead.
Class names map to category ids through ``category_ids`` (default label + 1).

Readers return ``dict[image_id, Detections]`` and raise
:class:`ResultFileError` (a ValueError) naming the file and line or entry.
"""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from detector.fileio import write_json_atomic, write_text_atomic
from detector.records import Detections

logger = logging.getLogger(__name__)

VOC_PREFIX = "comp4"  # devkit competition 4: detectors trained on any data
VOC_FIELDS = 6  # image_id score x1 y1 x2 y2


class ResultFileError(ValueError):
    """A result file that cannot be read; the message names the file."""


def voc_result_path(folder: str | os.PathLike, split: str, class_name: str,
                    prefix: str = VOC_PREFIX) -> Path:
    """Path of the devkit result file of one class: <folder>/<prefix>_det_<split>_<class>.txt."""
    return Path(folder) / f"{prefix}_det_{split}_{class_name}.txt"


def _number(value: float) -> str:
    """Shortest decimal that reads back to the same float64."""
    return repr(float(value))


def _score_text(score) -> str:
    """Shortest decimal that reads back to the same float32 score."""
    return np.format_float_positional(np.float32(score), unique=True, trim="0")


def write_voc_results(folder: str | os.PathLike, detections: Mapping[str, Detections],
                      class_names: Sequence[str], split: str, prefix: str = VOC_PREFIX) -> list[Path]:
    """Write one devkit result file per class (also for classes with no detections).

    Returns the paths written, in class order. Each file is written atomically.
    """
    lines = {c: [] for c in range(len(class_names))}
    for image_id, det in detections.items():
        if any(ch.isspace() for ch in image_id):
            raise ValueError(f"image id {image_id!r} contains whitespace: not writable to VOC files")
        # float64 before "+1" so the shift is exact and the reader can undo it.
        boxes = det.boxes.astype(np.float64)
        for box, score, label in zip(boxes.tolist(), det.scores.tolist(), det.labels.tolist()):
            x1, y1, x2, y2 = box
            lines[int(label)].append(f"{image_id} {_score_text(score)} {_number(x1 + 1)} "
                                     f"{_number(y1 + 1)} {_number(x2)} {_number(y2)}\n")
    paths = []
    for c, name in enumerate(class_names):
        path = voc_result_path(folder, split, name, prefix)
        write_text_atomic(path, "".join(lines[c]))
        paths.append(path)
    return paths


def _parse_voc_line(path: Path, lineno: int, line: str):
    fields = line.split()
    if len(fields) != VOC_FIELDS:
        raise ResultFileError(f"{path}:{lineno}: expected {VOC_FIELDS} fields "
                              f"'image_id score x1 y1 x2 y2', got {len(fields)}: {line.strip()!r}")
    try:
        values = [float(v) for v in fields[1:]]
    except ValueError:
        raise ResultFileError(f"{path}:{lineno}: not a number in {line.strip()!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise ResultFileError(f"{path}:{lineno}: non-finite number in {line.strip()!r}")
    score, x1, y1, x2, y2 = values
    if x2 < x1 or y2 < y1:
        raise ResultFileError(f"{path}:{lineno}: box has negative width or height "
                              f"(x1 {x1:g} x2 {x2:g}, y1 {y1:g} y2 {y2:g}): {line.strip()!r}")
    return fields[0], score, (x1 - 1.0, y1 - 1.0, x2, y2)  # 1-based inclusive -> 0-based


def _class_of_file(name: str, prefix: str, split: str | None, class_names: Sequence[str]):
    """(split, label) that a result file name encodes, or None if it names no known class.

    With ``split`` given the rest of the name must be exactly a class name;
    without, the longest class name that ends the name wins ("racecar" over "car").
    """
    stem = name[len(f"{prefix}_det_"):-len(".txt")]
    if split is not None:
        cls = stem[len(split) + 1:]
        return (split, class_names.index(cls)) if cls in class_names else None
    for label, cls in sorted(enumerate(class_names), key=lambda lc: -len(lc[1])):
        if stem.endswith(f"_{cls}") and len(stem) > len(cls) + 1:
            return stem[:-len(cls) - 1], label
    return None


def read_voc_results(folder: str | os.PathLike, class_names: Sequence[str], split: str | None = None,
                     prefix: str = VOC_PREFIX) -> dict[str, Detections]:
    """Read the devkit result files ``<prefix>_det_<split>_<class>.txt`` in ``folder``.

    Other files (other prefixes, other splits) are ignored. If ``split`` is
    None it is taken from the file names (all files must agree). A class without a file has no detections.
    Raises ResultFileError for a malformed line, a file whose class is not in
    ``class_names``, mixed splits, or a folder with no result file at all.
    """
    folder, class_names = Path(folder), list(class_names)
    if not folder.is_dir():
        raise ResultFileError(f"{folder}: not a folder of VOC result files")
    start = f"{prefix}_det_{split}_" if split is not None else f"{prefix}_det_"
    files = sorted(p for p in folder.iterdir() if p.name.startswith(start) and p.name.endswith(".txt"))
    if not files:
        raise ResultFileError(f"{folder}: no {start}<class>.txt files"
                              if split is not None else f"{folder}: no {start}<split>_<class>.txt files")
    per_image: dict[str, tuple[list, list, list]] = {}
    splits = set()
    for path in files:
        parsed = _class_of_file(path.name, prefix, split, class_names)
        if parsed is None:
            raise ResultFileError(f"{path}: file name names no known class "
                                  f"(classes: {', '.join(class_names)})")
        splits.add(parsed[0])
        label = parsed[1]
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                image_id, score, box = _parse_voc_line(path, lineno, line)
                boxes, scores, labels = per_image.setdefault(image_id, ([], [], []))
                boxes.append(box)
                scores.append(score)
                labels.append(label)
    if len(splits) > 1:
        raise ResultFileError(f"{folder}: result files of several splits {sorted(splits)}; "
                              f"pass the split")
    found_split = next(iter(splits))
    missing = [c for c in class_names if voc_result_path(folder, found_split, c, prefix) not in files]
    if missing:
        logger.warning("%s: no result file for class(es) %s: they are scored with no detections "
                       "(AP 0 where they have objects)", folder, ", ".join(missing))
    return {k: _to_detections(*v) for k, v in per_image.items()}


def _to_detections(boxes: list, scores: list, labels: list) -> Detections:
    return Detections(np.asarray(boxes, dtype=np.float64).reshape(-1, 4).astype(np.float32),
                      np.asarray(scores, dtype=np.float32), np.asarray(labels, dtype=np.int64))


def _json_image_id(image_id: str, image_ids: Mapping[str, int] | None):
    """COCO writes numeric ids as numbers; keep any id that would not read back the same."""
    if image_ids is not None:
        if image_id not in image_ids:
            raise ValueError(f"image id {image_id!r} has no entry in image_ids")
        return int(image_ids[image_id])
    if image_id.isdecimal() and str(int(image_id)) == image_id:
        return int(image_id)
    return image_id


def default_category_ids(class_names: Sequence[str]) -> dict[str, int]:
    """class name -> COCO category id: label + 1, in class_names order."""
    return {name: i + 1 for i, name in enumerate(class_names)}


def write_coco_results(path: str | os.PathLike, detections: Mapping[str, Detections],
                       class_names: Sequence[str], category_ids: Mapping[str, int] | None = None,
                       image_ids: Mapping[str, int] | None = None) -> None:
    """Write detections as a COCO results JSON list (atomically).

    ``image_ids`` (image_id -> COCO integer id, e.g. ``detector.data.coco_image_ids``)
    replaces the default id rule of the module docstring when given.
    """
    cat_of_label = [int((category_ids or default_category_ids(class_names))[n]) for n in class_names]
    out = []
    for image_id, det in detections.items():
        json_id = _json_image_id(image_id, image_ids)
        for box, score, label in zip(det.boxes.tolist(), det.scores.tolist(), det.labels.tolist()):
            x1, y1, x2, y2 = box
            out.append({"image_id": json_id, "category_id": cat_of_label[label],
                        "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
    write_json_atomic(path, out)


def read_coco_results(path: str | os.PathLike, class_names: Sequence[str],
                      category_ids: Mapping[str, int] | None = None,
                      image_ids: Mapping[str, int] | None = None) -> dict[str, Detections]:
    """Read a COCO results JSON list into image_id (str) -> Detections.

    With ``image_ids`` (image_id -> COCO integer id, as given to the writer or
    by ``detector.data.coco_image_ids``) a numeric JSON id is mapped back
    through it (unknown: error); string ids are kept as they are. Raises ResultFileError for invalid JSON, a non-list, an entry without the
    four keys, a bbox that is not 4 finite numbers, or an unknown category id.
    """
    path = Path(path)
    id_of_number = None if image_ids is None else {int(v): k for k, v in image_ids.items()}
    label_of = {int(c): label for label, c in
                enumerate((category_ids or default_category_ids(class_names))[n] for n in class_names)}
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ResultFileError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    if not isinstance(entries, list):
        raise ResultFileError(f"{path}: expected a JSON list of detections, got {type(entries).__name__}")
    per_image: dict[str, tuple[list, list, list]] = {}
    for k, entry in enumerate(entries):
        where = f"{path}: entry {k}"
        if not isinstance(entry, dict) or not {"image_id", "category_id", "bbox", "score"} <= entry.keys():
            raise ResultFileError(f"{where}: expected an object with image_id, category_id, bbox, score")
        image_id, cat, bbox, score = (entry["image_id"], entry["category_id"], entry["bbox"],
                                      entry["score"])
        if isinstance(image_id, bool) or not isinstance(image_id, (int, str)):
            raise ResultFileError(f"{where}: image_id must be an integer or a string, got {image_id!r}")
        if isinstance(cat, bool) or not isinstance(cat, int) or cat not in label_of:
            raise ResultFileError(f"{where}: unknown category_id {cat!r} "
                                  f"(known: {sorted(label_of)})")
        numbers = list(bbox) + [score] if isinstance(bbox, list) else []
        if (not isinstance(bbox, list) or len(bbox) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                           for v in numbers)):
            raise ResultFileError(f"{where}: bbox must be 4 finite numbers [x, y, w, h] and score a "
                                  f"finite number, got bbox={bbox!r} score={score!r}")
        if isinstance(image_id, int):
            if id_of_number is None:
                image_id = str(image_id)
            elif image_id in id_of_number:
                image_id = id_of_number[image_id]
            else:
                raise ResultFileError(f"{where}: image_id {image_id} is not one of the dataset's ids")
        x, y, w, h = (float(v) for v in bbox)
        if w < 0 or h < 0:
            raise ResultFileError(f"{where}: bbox {bbox!r} has a negative width or height; COCO boxes are "
                                  f"[x, y, width, height] (is it [x1, y1, x2, y2]?)")
        boxes, scores, labels = per_image.setdefault(image_id, ([], [], []))
        boxes.append((x, y, x + w, y + h))  # COCO xywh -> our x1y1x2y2
        scores.append(float(score))
        labels.append(label_of[cat])
    return {k: _to_detections(*v) for k, v in per_image.items()}
