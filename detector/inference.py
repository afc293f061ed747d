"""Running a trained detector over image files: results JSON and annotated images."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable

import cv2
from tqdm import tqdm

from .detector import Detector
from .fileio import atomic_path, write_json_atomic
from .images import ImageTooSmallError
from .images import ImageReadError, is_image_file, read_image
from .visualize import draw_detections

logger = logging.getLogger(__name__)


def list_inputs(path: str | os.PathLike) -> list[Path]:
    """The files to run on: ``path`` itself, or every file in the folder (sorted, not recursive)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    raise FileNotFoundError(f"{path}: no such file or folder")


def detect_files(detector: Detector, files: Iterable[Path], out_dir: str | os.PathLike,
                 draw_threshold: float = 0.0, progress: bool = True) -> dict:
    """Detect objects in each image file; write ``results.json`` and annotated images.

    Files that are not images (by extension or content) are skipped with a
    warning and listed under ``skipped`` in the results.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results, skipped = [], []
    files = list(files)
    for f in tqdm(files, desc="detect", disable=not progress, unit="img"):
        if not is_image_file(f):
            logger.warning("%s: skipped, not an image file (extension %r)", f, f.suffix)
            skipped.append({"file": str(f), "reason": "not an image file"})
            continue
        try:
            image = read_image(f)
            dets = detector.detect(image, name=str(f))
        except (ImageReadError, ImageTooSmallError) as e:
            logger.warning("skipped: %s", e)
            skipped.append({"file": str(f), "reason": str(e)})
            continue
        annotated = draw_detections(image, dets, detector.class_names, min_score=draw_threshold)
        out_image = out_dir / f"{f.stem}_{f.suffix.lstrip('.').lower()}_det.jpg"  # a.jpg and a.png both survive
        with atomic_path(out_image) as tmp:
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(annotated, cv2.COLOR_RGB2BGR))
            tmp.write_bytes(buf.tobytes())
        results.append({
            "file": str(f), "width": int(image.shape[1]), "height": int(image.shape[0]),
            "annotated": str(out_image),
            "detections": [{"class": detector.class_names[int(l)], "score": round(float(s), 5),
                            "box": [round(float(v), 2) for v in b]}
                           for b, s, l in zip(dets.boxes, dets.scores, dets.labels)],
        })
    summary = {"images": results, "skipped": skipped,
               "box_format": "x1, y1, x2, y2 in 0-based continuous pixel coordinates"}
    write_json_atomic(out_dir / "results.json", summary)
    return summary
