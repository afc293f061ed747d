"""Thumbnails of the worst errors of an analysis, drawn on their images.

Each :class:`~detector.evaluation.analysis.ErrorExample` becomes a crop around
its box (and the ground-truth box it overlaps, if any) with some context,
scaled to a fixed height: the error's box in red (a false positive) or blue
(a missed object), the related ground-truth box in green.
"""
from __future__ import annotations

import logging
from typing import Sequence

import cv2
import numpy as np

from detector.images import ImageReadError, read_image

logger = logging.getLogger(__name__)

THUMB_HEIGHT = 160  # pixels; the strip fits a laptop screen with 6-8 per row
CONTEXT = 0.5  # context added on each side, as a fraction of the crop's longer side
RED, GREEN, BLUE = (220, 30, 30), (30, 190, 60), (30, 90, 230)


def crop_box(example, width: int, height: int) -> tuple[int, int, int, int]:
    """Integer crop (x1, y1, x2, y2) around the example's boxes plus CONTEXT, inside the image."""
    boxes = np.array([example.box] + ([example.related_box] if example.related_box else []), np.float64)
    x1, y1 = boxes[:, :2].min(axis=0)
    x2, y2 = boxes[:, 2:].max(axis=0)
    pad = CONTEXT * max(x2 - x1, y2 - y1, 1.0)
    return (int(max(0, np.floor(x1 - pad))), int(max(0, np.floor(y1 - pad))),
            int(min(width, np.ceil(x2 + pad))), int(min(height, np.ceil(y2 + pad))))


def draw_example(image: np.ndarray, example, height: int = THUMB_HEIGHT) -> np.ndarray:
    """The thumbnail (RGB uint8, ``height`` rows) of one example on its RGB image."""
    cx1, cy1, cx2, cy2 = crop_box(example, image.shape[1], image.shape[0])
    crop = image[cy1:max(cy2, cy1 + 1), cx1:max(cx2, cx1 + 1)]
    scale = height / crop.shape[0]
    width = max(1, min(int(round(crop.shape[1] * scale)), 3 * height))
    thumb = np.ascontiguousarray(cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA))
    sx = width / crop.shape[1]
    boxes = [(example.related_box, GREEN)] if example.related_box else []
    boxes.append((example.box, BLUE if example.kind == "missed" else RED))
    for box, colour in boxes:
        x1, y1, x2, y2 = box
        cv2.rectangle(thumb, (int(round((x1 - cx1) * sx)), int(round((y1 - cy1) * scale))),
                      (int(round((x2 - cx1) * sx)) - 1, int(round((y2 - cy1) * scale)) - 1), colour, 2)
    return thumb


def caption(example) -> str:
    """One line: kind, class and score, image id."""
    score = "" if example.score is None else f" {example.score:.3g}"
    return f"{example.kind}: {example.class_name}{score} ({example.image_id})"


def draw_examples(examples: Sequence) -> list[tuple[object, np.ndarray]]:
    """(example, thumbnail) for every example whose image can be read; each image is read once."""
    images: dict[str, np.ndarray | None] = {}
    out = []
    for e in examples:
        if e.path not in images:
            try:
                images[e.path] = read_image(e.path)
            except ImageReadError as err:
                logger.warning("report: no thumbnail for %s (%s)", e.image_id, err)
                images[e.path] = None
        if images[e.path] is not None:
            out.append((e, draw_example(images[e.path], e)))
    return out
