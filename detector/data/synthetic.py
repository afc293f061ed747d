"""A small synthetic PASCAL VOC dataset: coloured shapes on textured backgrounds.

Used by the end-to-end demo and the tests: a detector trained from scratch on
a CPU in minutes should reach a high mAP on it, so it checks the whole
pipeline, not the network. Each class is one shape type drawn in a
class-typical saturated colour (jittered per object) on a grey, low-saturation
textured background, so both shape and colour separate the classes.

The files follow the VOC layout exactly (``JPEGImages/``, ``Annotations/``
with real VOC XML, ``ImageSets/Main/{trainval,test}.txt``), so the same
:class:`~detector.data.voc.VOCDataset` loader reads it. Boxes in the XML are
VOC's 1-based inclusive pixels and are tight: xmin..xmax are the first and
last columns (1-based) that the drawn shape covers.

Output is a pure function of the arguments: image ``k`` (numbered across
trainval then test) is drawn from ``numpy.random.default_rng([seed, k])``.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..fileio import write_bytes_atomic, write_text_atomic
from .voc_writer import VOCObject, format_voc_xml

# Shapes the generator can draw, with each one's class-typical RGB colour.
# The colours are saturated (max - min channel >= 150) while the background
# is grey (max - min channel < ~45), so shape pixels are easy to tell apart.
SHAPE_COLOURS: dict[str, tuple[int, int, int]] = {
    "circle": (225, 45, 45),      # red
    "square": (45, 205, 60),      # green
    "triangle": (50, 70, 230),    # blue
    "diamond": (230, 200, 30),    # yellow
    "cross": (200, 50, 210),      # magenta
}
DEFAULT_CLASSES = ("circle", "square", "triangle")

COLOUR_JITTER = 20            # +- per channel, uniform: same class, varied colour
SIZE_RANGE = (30, 90)         # object size in pixels (bounding square side), uniform
DIFFICULT_BELOW = 33          # objects smaller than this are marked difficult (~5%)
OBJECTS_RANGE = (1, 4)        # objects per image, inclusive
MIN_GAP = 6                   # pixels between the boxes of two objects
EDGE_MARGIN = 2               # pixels between a box and the image border
PLACEMENT_TRIES = 50          # random positions tried per object before giving up
JPEG_QUALITY = 95             # high: JPEG ringing stays within a pixel or two of edges


@dataclass(frozen=True)
class _Object:
    name: str
    xmin: int  # 0-based inclusive pixel columns/rows covered by the shape
    ymin: int
    xmax: int
    ymax: int
    difficult: bool


def _shape_mask(shape: str, size: int) -> np.ndarray:
    """Boolean [size, size] mask of ``shape`` inscribed in a size x size square.

    Pixel centres (x + 0.5, y + 0.5) inside the shape are set. Every shape
    touches all four sides of its square, so its tight box is the square.
    """
    c = (np.arange(size) + 0.5) / size  # pixel centres in [0, 1]
    x, y = np.meshgrid(c, c)
    if shape == "circle":
        mask = (x - 0.5) ** 2 + (y - 0.5) ** 2 <= 0.25
    elif shape == "square":
        mask = np.ones((size, size), dtype=bool)
    elif shape == "triangle":
        # Apex at top centre, base along the bottom: |x - 0.5| <= y / 2.
        mask = np.abs(x - 0.5) <= y / 2 + 0.5 / size
    elif shape == "diamond":
        mask = np.abs(x - 0.5) + np.abs(y - 0.5) <= 0.5
    elif shape == "cross":
        mask = (np.abs(x - 0.5) <= 1 / 6) | (np.abs(y - 0.5) <= 1 / 6)
    else:
        raise ValueError(f"unknown synthetic shape {shape!r}; known: {', '.join(SHAPE_COLOURS)}")
    return mask


def _draw_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Grey textured background, float32 [H, W, 3]: smooth blobs + a grey tint + pixel noise."""
    coarse = rng.uniform(70, 180, size=(height // 16 + 2, width // 16 + 2)).astype(np.float32)
    # Bilinear upsampling of a coarse grid gives low-frequency texture.
    smooth = np.asarray(Image.fromarray(coarse).resize((width + 32, height + 32), Image.BILINEAR))
    oy, ox = rng.integers(0, 16, size=2)
    base = smooth[oy:oy + height, ox:ox + width]
    tint = rng.uniform(-8, 8, size=3).astype(np.float32)
    noise = rng.normal(0, 6, size=(height, width, 3)).astype(np.float32)
    return base[:, :, None] + tint + noise


def _place(rng: np.random.Generator, size: int, width: int, height: int,
           taken: list[_Object]) -> tuple[int, int] | None:
    """Top-left corner of a size x size box at least MIN_GAP from every taken box, or None."""
    hi_x, hi_y = width - EDGE_MARGIN - size, height - EDGE_MARGIN - size
    if hi_x < EDGE_MARGIN or hi_y < EDGE_MARGIN:
        return None
    for _ in range(PLACEMENT_TRIES):
        x0 = int(rng.integers(EDGE_MARGIN, hi_x + 1))
        y0 = int(rng.integers(EDGE_MARGIN, hi_y + 1))
        if all(x0 > o.xmax + MIN_GAP or x0 + size - 1 < o.xmin - MIN_GAP
               or y0 > o.ymax + MIN_GAP or y0 + size - 1 < o.ymin - MIN_GAP for o in taken):
            return x0, y0
    return None


def draw_synthetic_image(rng: np.random.Generator, width: int, height: int,
                         classes: tuple[str, ...]) -> tuple[np.ndarray, list[_Object]]:
    """One image (uint8 [H, W, 3]) and its objects (0-based inclusive tight boxes)."""
    image = _draw_background(rng, width, height)
    objects: list[_Object] = []
    for _ in range(int(rng.integers(OBJECTS_RANGE[0], OBJECTS_RANGE[1] + 1))):
        name = classes[int(rng.integers(len(classes)))]
        size = int(rng.integers(SIZE_RANGE[0], SIZE_RANGE[1] + 1))
        corner = _place(rng, size, width, height, objects)
        if corner is None:
            continue  # image is full; fewer objects is fine
        box = paint_shape(image, rng, name, SHAPE_COLOURS[name], corner, size)
        objects.append(_Object(name, *box, difficult=size < DIFFICULT_BELOW))
    return np.clip(image, 0, 255).astype(np.uint8), objects


def paint_shape(image: np.ndarray, rng: np.random.Generator, shape: str, rgb: tuple[int, int, int],
                corner: tuple[int, int], size: int) -> tuple[int, int, int, int]:
    """Paint ``shape`` in ``rgb`` (jittered per object) into the size x size square at ``corner``
    of a float image; returns its tight box (0-based inclusive xmin, ymin, xmax, ymax)."""
    x0, y0 = corner
    mask = _shape_mask(shape, size)
    colour = np.clip(np.array(rgb, np.float32) + rng.uniform(-COLOUR_JITTER, COLOUR_JITTER, size=3), 0, 255)
    image[y0:y0 + size, x0:x0 + size][mask] = colour
    # Tight box from the mask itself, not from the square it was drawn in.
    rows, cols = np.nonzero(mask)
    return x0 + int(cols.min()), y0 + int(rows.min()), x0 + int(cols.max()), y0 + int(rows.max())


def _encode_image(image: np.ndarray, ext: str) -> bytes:
    buf = io.BytesIO()
    if ext == "jpg":
        Image.fromarray(image).save(buf, format="JPEG", quality=JPEG_QUALITY)
    else:
        Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def make_synthetic_voc(root: str | os.PathLike, num_train: int = 200, num_test: int = 100,
                       image_size: tuple[int, int] = (256, 192), seed: int = 0,
                       classes: tuple[str, ...] = DEFAULT_CLASSES,
                       image_format: str = "jpg") -> Path:
    """Write a synthetic PASCAL VOC dataset under ``root`` and return ``root``.

    Args:
        root: output folder (created); existing files of the same names are replaced.
        num_train, num_test: images in ImageSets/Main/trainval.txt and test.txt.
        image_size: (width, height) in pixels; at least 96 x 96 so a 90 px object fits.
        seed: the whole dataset is a pure function of the arguments.
        classes: shape names, each one class (a subset of SHAPE_COLOURS' keys).
        image_format: "jpg" (VOC-like) or "png" (lossless: pixel-exact edges).

    Image ids are zero-padded running numbers ("000000", ...), trainval first.
    """
    width, height = (int(v) for v in image_size)
    if width < SIZE_RANGE[1] + 2 * EDGE_MARGIN or height < SIZE_RANGE[1] + 2 * EDGE_MARGIN:
        raise ValueError(f"image_size {image_size} too small for objects up to {SIZE_RANGE[1]} px")
    classes = tuple(classes)
    unknown = [c for c in classes if c not in SHAPE_COLOURS]
    if not classes or unknown or len(set(classes)) != len(classes):
        raise ValueError(f"classes {classes} must be distinct names from {', '.join(SHAPE_COLOURS)}")
    if image_format not in ("jpg", "png"):
        raise ValueError(f"image_format {image_format!r} must be 'jpg' or 'png'")
    root, ids = voc_layout(root, num_train, num_test)
    for k, image_id in enumerate(ids):
        rng = np.random.default_rng([seed, k])
        image, objects = draw_synthetic_image(rng, width, height, classes)
        filename = f"{image_id}.{image_format}"
        write_bytes_atomic(root / "JPEGImages" / filename, _encode_image(image, image_format))
        write_text_atomic(root / "Annotations" / f"{image_id}.xml",
                          format_voc_xml(filename, width, height, [
                              # VOC pixels are 1-based: 0-based inclusive pixel p is written p + 1.
                              VOCObject(o.name, o.xmin + 1, o.ymin + 1, o.xmax + 1, o.ymax + 1, o.difficult)
                              for o in objects], folder="VOCsynthetic"))
    write_splits(root, ids, num_train)
    return root


def voc_layout(root: str | os.PathLike, num_train: int, num_test: int) -> tuple[Path, list[str]]:
    """Create a generated set's VOC folders under ``root``; return it and the image ids
    (zero-padded running numbers, trainval first)."""
    if num_train < 0 or num_test < 0:
        raise ValueError("num_train and num_test must be >= 0")
    root = Path(root)
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root, [f"{k:06d}" for k in range(num_train + num_test)]


def write_splits(root: Path, ids: list[str], num_train: int) -> None:
    """ImageSets/Main/trainval.txt (the first ``num_train`` ids) and test.txt (the rest)."""
    write_text_atomic(root / "ImageSets/Main/trainval.txt", "".join(i + "\n" for i in ids[:num_train]))
    write_text_atomic(root / "ImageSets/Main/test.txt", "".join(i + "\n" for i in ids[num_train:]))
