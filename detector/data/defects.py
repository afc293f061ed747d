"""A generated set of texture-like surface defects, where selective search misses.

Industrial inspection data (steel strips, fabric, tiles) has small grey images
whose whole surface is textured and whose defects differ from it only in
texture statistics, not in colour. Felzenszwalb segmentation (selective
search's first step) then either cuts the texture into many small segments or
merges a defect into its surroundings, so the windows miss the defects. This
generator makes such data, so tests and benchmarks can show the miss and what
fixes it (``proposals.method=dense`` / ``union``, ``proposals.auto``):

- 200 x 200 grey images (the size of NEU-DET's steel-surface images);
- a background of oriented fine stripes (a rolled surface) plus grain noise;
- 3 classes, 1-3 defects per image, boxes 16 to 110 px a side:
  ``scratch`` (a thin, slightly brighter line, long and narrow),
  ``patch`` (a blotch whose mean is shifted a little, soft edged),
  ``pits`` (a cluster of small dark dots on the texture).

Files follow the VOC layout (the demo set's writer). Output is a pure function
of the arguments: image ``k`` is drawn from ``numpy.random.default_rng([seed, k, 11])``.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from ..fileio import write_bytes_atomic, write_text_atomic
from .synthetic import _encode_image, voc_layout, write_splits
from .voc_writer import VOCObject, format_voc_xml

DEFECT_CLASSES = ("scratch", "patch", "pits")
IMAGE_SIDE = 200              # NEU-DET's images are 200 x 200 grey
DEFECTS_RANGE = (1, 3)        # defects per image, inclusive
SIZE_RANGE = (16, 110)        # the longer box side in pixels, log-uniform
GAP = 4                       # pixels between two defects' boxes
STRIPE_CONTRAST = 18.0        # grey levels of the rolling stripes
GRAIN_SIGMA = 12.0            # grey levels of the per-pixel grain


def _background(rng: np.random.Generator, side: int) -> np.ndarray:
    """float32 [side, side]: oriented stripes of a few px period plus smoothed and raw grain."""
    y, x = np.mgrid[0:side, 0:side].astype(np.float32)
    angle = rng.uniform(-0.3, 0.3) + (np.pi / 2 if rng.random() < 0.5 else 0.0)
    period = rng.uniform(3.0, 7.0)
    phase = x * np.cos(angle) + y * np.sin(angle)
    stripes = STRIPE_CONTRAST * np.sin(2 * np.pi * phase / period + rng.uniform(0, 2 * np.pi))
    blotches = cv2.GaussianBlur(rng.normal(0, 14, (side, side)).astype(np.float32), (0, 0), 6)
    grain = rng.normal(0, GRAIN_SIGMA, (side, side)).astype(np.float32)
    return rng.uniform(100, 150) + stripes + blotches + grain


def _box_size(rng: np.random.Generator, name: str) -> tuple[int, int]:
    """(width, height) of a defect's box: scratches are long and narrow, the others squat."""
    longer = int(round(np.exp(rng.uniform(np.log(SIZE_RANGE[0]), np.log(SIZE_RANGE[1])))))
    if name == "scratch":
        shorter = max(4, int(round(longer * rng.uniform(0.08, 0.25))))
    else:
        shorter = max(SIZE_RANGE[0] // 2, int(round(longer * rng.uniform(0.6, 1.0))))
    return (longer, shorter) if rng.random() < 0.5 else (shorter, longer)


def _paint(image: np.ndarray, rng: np.random.Generator, name: str, x0: int, y0: int, w: int, h: int) -> None:
    """Paint defect ``name`` filling the box [x0, x0 + w) x [y0, y0 + h) of ``image`` in place."""
    region = image[y0:y0 + h, x0:x0 + w]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if name == "scratch":
        # A straight line from one end of the box to the other along its longer side.
        if w >= h:
            centre = h / 2 + (xx - w / 2) * (h - 2) / max(w, 1) * rng.choice([-1, 1])
            dist = np.abs(yy + 0.5 - centre)
        else:
            centre = w / 2 + (yy - h / 2) * (w - 2) / max(h, 1) * rng.choice([-1, 1])
            dist = np.abs(xx + 0.5 - centre)
        region += rng.uniform(25, 40) * np.clip(1.5 - dist, 0, 1)
    elif name == "patch":
        # A soft-edged ellipse whose mean shifts and whose grain is coarser.
        r = ((xx + 0.5 - w / 2) / (w / 2)) ** 2 + ((yy + 0.5 - h / 2) / (h / 2)) ** 2
        weight = np.clip((1.0 - r) * 4, 0, 1)
        coarse = cv2.GaussianBlur(rng.normal(0, 20, (h, w)).astype(np.float32), (0, 0), 1.5)
        region += weight * (rng.choice([-1, 1]) * rng.uniform(18, 30) + coarse)
    else:  # pits: small dark dots spread over the box, one near each edge so the box is tight
        n = max(4, int(w * h / 60))
        cx = np.concatenate([[1.5, w - 1.5, rng.uniform(2, w - 2), rng.uniform(2, w - 2)],
                             rng.uniform(1.5, w - 1.5, n - 4)])
        cy = np.concatenate([[rng.uniform(2, h - 2), rng.uniform(2, h - 2), 1.5, h - 1.5],
                             rng.uniform(1.5, h - 1.5, n - 4)])
        for px, py in zip(cx, cy):
            d2 = (xx + 0.5 - px) ** 2 + (yy + 0.5 - py) ** 2
            region -= rng.uniform(35, 55) * (d2 <= 2.0)


def _free(box: tuple[int, int, int, int], taken: list[tuple[int, int, int, int]]) -> bool:
    x0, y0, x1, y1 = box
    return all(x0 > t[2] + GAP or x1 < t[0] - GAP or y0 > t[3] + GAP or y1 < t[1] - GAP for t in taken)


def draw_defect_image(rng: np.random.Generator) -> tuple[np.ndarray, list[VOCObject]]:
    """One grey image as RGB uint8 [200, 200, 3] and its defects as VOC boxes (1-based inclusive)."""
    side = IMAGE_SIDE
    image = _background(rng, side)
    taken, objects = [], []
    for _ in range(int(rng.integers(DEFECTS_RANGE[0], DEFECTS_RANGE[1] + 1))):
        name = DEFECT_CLASSES[int(rng.integers(len(DEFECT_CLASSES)))]
        w, h = _box_size(rng, name)
        for _try in range(30):
            x0, y0 = int(rng.integers(1, side - w)), int(rng.integers(1, side - h))
            box = (x0, y0, x0 + w - 1, y0 + h - 1)  # 0-based inclusive pixels
            if _free(box, taken):
                break
        else:
            continue  # no room: fewer defects is fine
        _paint(image, rng, name, x0, y0, w, h)
        taken.append(box)
        objects.append(VOCObject(name, box[0] + 1, box[1] + 1, box[2] + 1, box[3] + 1, False))
    grey = np.clip(image, 0, 255).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2), objects


def make_defect_voc(root: str | os.PathLike, num_train: int = 200, num_test: int = 100,
                    seed: int = 0) -> Path:
    """Write the defect set under ``root`` (VOC layout: trainval then test ids) and return ``root``."""
    root, ids = voc_layout(root, num_train, num_test)
    for k, image_id in enumerate(ids):
        image, objects = draw_defect_image(np.random.default_rng([seed, k, 11]))
        write_bytes_atomic(root / "JPEGImages" / f"{image_id}.jpg", _encode_image(image, "jpg"))
        write_text_atomic(root / "Annotations" / f"{image_id}.xml",
                          format_voc_xml(f"{image_id}.jpg", IMAGE_SIDE, IMAGE_SIDE, objects,
                                         folder="VOCdefects"))
    write_splits(root, ids, num_train)
    return root
