"""Running a trained detector over image files: results, annotated images, training formats.

A folder run (``tools/detect.py``, ``sppnet detect``) takes a folder, a glob
pattern or a text file of paths (:func:`list_inputs`) and writes, as each
image is done (a killed run keeps what it finished):

- ``results.jsonl``: one JSON line per image (or skipped file), appended;
- ``<id>_<ext>_det.jpg``: the image with its detections drawn;
- with ``save_voc``, ``voc/``: a VOC-layout folder (``Annotations/<id>.xml``,
  ``JPEGImages/`` with a copy of each image, and at the end
  ``ImageSets/Main/trainval.txt``) that the VOC loader, LabelImg and CVAT
  read: pseudo-labels to train on;

and at the end ``results.json`` (all images, the skipped files) and, with
``save_coco``, ``coco_results.json`` (a COCO results list; image ids are
1, 2, ... in input order, as ``coco_image_id`` in results.json says). Only
detections with score >= ``threshold`` are saved and drawn.

``<id>`` is the file's stem, unique within the run and always a plain file
name (:func:`unique_ids`), so nothing is written outside the output folder.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np

from ..data.ids import safe_image_id
from ..data.voc_writer import format_voc_xml, voc_objects
from ..evaluation.result_files import write_coco_results
from ..fileio import write_bytes_atomic, write_json_atomic, write_text_atomic
from ..images import ImageReadError, ImageTooSmallError, encode_jpeg, is_image_file, read_image
from ..progress import progress_of
from ..records import Detections
from .visualize import draw_detections

if TYPE_CHECKING:  # either detector: the torch one or the ONNX runtime's (no torch on that path)
    from ..deploy.runtime import OnnxDetector
    from .detector import Detector

logger = logging.getLogger(__name__)

LIST_EXTENSIONS = (".txt", ".lst", ".list")  # a text file of image paths, one per line
VOC_FOLDER = "voc"
VOC_SPLIT = "trainval"  # the split tools/train.py reads by default (data.train_split)
GLOB_CHARS = "*?["


def read_path_list(path: Path) -> list[Path]:
    """Paths listed one per line in ``path`` (blank lines and # comments skipped);
    relative ones are relative to the list file's folder."""
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line).expanduser()
            out.append(p if p.is_absolute() else path.parent / p)
    return out


def list_inputs(spec: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """The files to run on: an image file; a text file of paths (.txt, .lst, .list);
    every file in a folder (sorted; its subfolders too with ``recursive``); or
    the matches of a glob pattern (sorted; ``**`` recurses).

    In a folder, what is left out is said in one warning: subfolders (without
    ``recursive``), broken links and hidden files.
    """
    path = Path(spec)
    if path.is_file():
        return read_path_list(path) if path.suffix.lower() in LIST_EXTENSIONS else [path]
    if path.is_dir():
        return _folder_files(path, recursive)
    if any(c in str(spec) for c in GLOB_CHARS):
        matches = sorted(Path(p) for p in glob.glob(str(spec), recursive=True) if Path(p).is_file())
        if matches:
            return matches
        raise FileNotFoundError(f"{spec}: the pattern matches no file")
    raise FileNotFoundError(f"{path}: no such file or folder")


def _folder_files(folder: Path, recursive: bool) -> list[Path]:
    files, subfolders, broken, hidden = [], [], [], 0
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            hidden += 1
        elif p.is_dir():
            if recursive:
                files.extend(_folder_files(p, recursive))
            else:
                subfolders.append(p.name)
        elif p.is_file():
            files.append(p)
        elif p.is_symlink():
            broken.append(p.name)
    left_out = []
    if subfolders:
        left_out.append(f"{len(subfolders)} subfolder(s) ({', '.join(subfolders[:5])}"
                        f"{', ...' if len(subfolders) > 5 else ''}; --recursive descends into them)")
    if broken:
        left_out.append(f"{len(broken)} broken link(s) ({', '.join(broken[:5])})")
    if hidden:
        left_out.append(f"{hidden} hidden file(s)")
    if left_out:
        logger.warning("%s: left out %s", folder, "; ".join(left_out))
    return files


def unique_ids(files: list[Path]) -> list[str]:
    """An image id per file: its stem, with _2, _3, ... where stems repeat (a.jpg, a.png,
    sub/a.jpg). The user named these files, so a stem that is no valid VOC id (``..``
    from ``...jpg``, a backslash) is made one (:func:`safe_image_id`) rather than refused."""
    used: set[str] = set()
    out = []
    for f in files:
        stem = safe_image_id(f.stem)
        image_id, n = stem, 1
        while image_id in used:  # also past a real "a_2.jpg" beside a.jpg and a.png
            n += 1
            image_id = f"{stem}_{n}"
        used.add(image_id)
        out.append(image_id)
    return out


def keep_above(dets: Detections, threshold: float) -> Detections:
    """The detections with score >= ``threshold``."""
    keep = dets.scores >= threshold
    return Detections(dets.boxes[keep], dets.scores[keep], dets.labels[keep])


def write_voc_image(voc_dir: Path, image_id: str, source: Path, image: np.ndarray, dets: Detections,
                    class_names) -> Path:
    """Copy ``source`` into ``voc_dir``/JPEGImages and write its annotation XML; returns the XML path."""
    filename = f"{image_id}{source.suffix.lower()}"
    (voc_dir / "JPEGImages").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, voc_dir / "JPEGImages" / filename)
    height, width = image.shape[:2]
    xml = voc_dir / "Annotations" / f"{image_id}.xml"
    write_text_atomic(xml, format_voc_xml(filename, width, height,
                                          voc_objects(dets.boxes, dets.labels, class_names, width, height)))
    return xml


def result_entry(f: Path, image: np.ndarray, dets: Detections, class_names) -> dict:
    return {"file": str(f), "width": int(image.shape[1]), "height": int(image.shape[0]),
            "detections": [{"class": class_names[int(l)], "score": round(float(s), 5),
                            "box": [round(float(v), 2) for v in b]}
                           for b, s, l in zip(dets.boxes, dets.scores, dets.labels)]}


def _searches_ahead(detector: "Detector | OnnxDetector", files: list[Path], pipeline: bool):
    """(detector, iterator of (path, future of its windows) over the image files in
    order), searched ahead in worker processes, the detector leaving their cores
    to them; or (detector, None) when the run is not pipelined (the detector
    then searches each image itself)."""
    from .pipeline import pipeline_workers, propose_files

    images = [f for f in files if is_image_file(f)]
    workers = pipeline_workers(detector.proposals, len(images)) if pipeline else 0
    if not workers:
        return detector, None
    return (detector.with_reserved_cores(workers),
            propose_files(images, detector.proposals, workers))


def detect_files(detector: "Detector | OnnxDetector", files: Iterable[Path], out_dir: str | os.PathLike,
                 threshold: float = 0.0, progress: bool = True, save_voc: bool = False,
                 save_coco: bool = False, pipeline: bool = True) -> dict:
    """Detect objects in each image file and write the outputs of the module docstring.

    Files that are not images (by extension or content) are skipped with a
    warning and listed under ``skipped``. Returns the content of results.json.

    With ``pipeline`` (and more than one image), selective search for the
    next images runs in ``proposals.workers`` processes (0 = all cores) while
    the network works on the current one (:mod:`detector.inference.pipeline`); the
    network then leaves those cores to them (``Detector.reserved_cores``).
    The results are the same either way.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = list(files)
    ids = unique_ids(files)
    voc_dir = out_dir / VOC_FOLDER
    results, skipped, kept = [], [], {}
    detector, searches = _searches_ahead(detector, files, pipeline)
    try:
        with open(out_dir / "results.jsonl", "w") as stream:
            for f, image_id in progress_of(list(zip(files, ids)), desc="detect", unit="img", enabled=progress):
                try:
                    if not is_image_file(f):
                        raise ImageReadError(f"{f}: not an image file (extension {f.suffix!r})")
                    search = next(searches)[1] if searches is not None else None  # f's, in input order
                    image = read_image(f)
                    windows = search.result() if search is not None else None
                    dets = keep_above(detector.detect(image, windows, name=str(f)), threshold)
                except (ImageReadError, ImageTooSmallError) as e:
                    logger.warning("skipped: %s", e)
                    skipped.append({"file": str(f), "reason": str(e)})
                    stream.write(json.dumps({"skipped": skipped[-1]}) + "\n")
                    stream.flush()
                    continue
                entry = result_entry(f, image, dets, detector.class_names)
                # By the unique id: sub1/a.jpg and sub2/a.jpg (--recursive) both survive.
                out_image = out_dir / f"{image_id}_{f.suffix.lstrip('.').lower()}_det.jpg"
                write_bytes_atomic(out_image, encode_jpeg(draw_detections(image, dets, detector.class_names)))
                entry["annotated"] = str(out_image)
                if save_voc:
                    entry["voc_annotation"] = str(write_voc_image(voc_dir, image_id, f, image, dets,
                                                                  detector.class_names))
                if save_coco:
                    entry["coco_image_id"] = len(kept) + 1
                kept[image_id] = dets
                results.append(entry)
                stream.write(json.dumps(entry) + "\n")
                stream.flush()
    finally:
        if searches is not None:
            searches.close()  # cancels the searches still queued
    summary = {"images": results, "skipped": skipped, "threshold": threshold,
               "box_format": "x1, y1, x2, y2 in 0-based continuous pixel coordinates"}
    if save_voc:
        write_text_atomic(voc_dir / "ImageSets" / "Main" / f"{VOC_SPLIT}.txt", "".join(i + "\n" for i in kept))
        summary["voc"] = str(voc_dir)
    if save_coco:
        write_coco_results(out_dir / "coco_results.json", kept, detector.class_names,
                           image_ids={k: i + 1 for i, k in enumerate(kept)})
        summary["coco_results"] = str(out_dir / "coco_results.json")
    write_json_atomic(out_dir / "results.json", summary)
    return summary
