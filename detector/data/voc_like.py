"""A generated dataset shaped like PASCAL VOC 2007, for measuring a full-size run.

The figures of a VOC 2007 run (time and memory per stage as the number of
images grows) depend on the images' size, the number of classes and the
objects per image, not on what the objects look like. This generator keeps
those shapes of VOC 2007 and draws the content with the synthetic shapes of
:mod:`detector.data.synthetic`:

- images of VOC's usual sizes (500 x 375, 375 x 500, 500 x 333, 333 x 500),
- 20 classes (5 shapes x 4 colours, e.g. ``red_circle``),
- about 2.4 objects per image (1 + Poisson(1.4), at most 8; VOC 2007
  trainval: 2.5), of widely varying sizes (24 to 260 px, log-uniform),
- about 23% of the images with objects of several classes (VOC 2007
  trainval: 33%): a further object repeats the image's first class with
  probability 0.8 (VOC's many-people images), else it is a random class.

``background="clutter"`` draws the objects on a photo-like cluttered
background (:mod:`detector.data.clutter`) instead of the demo's smooth grey
one: selective search with the shipped settings then finds ~2000 windows
per image, the count R-CNN and SPP-net report on VOC photos, against
~300-450 on the plain background (docs/benchmarks.md, "VOC-density
generated set (issue 29)").

The files follow the VOC layout (same writer as the demo's set). Output is a
pure function of the arguments: image ``k`` (trainval then test) is drawn
from ``numpy.random.default_rng([seed, k, 7])``, its cluttered background
from ``default_rng([seed, k, 7, 1])`` (a stream of its own, so the sizes,
objects and annotations are those of the plain set of the same seed).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..fileio import write_bytes_atomic, write_text_atomic
from ..progress import progress_of
from .clutter import draw_clutter
from .synthetic import (EDGE_MARGIN, _draw_background, _encode_image, _Object, _place, paint_shape,
                        voc_layout, write_splits)
from .voc_writer import VOCObject, format_voc_xml

SHAPES = ("circle", "square", "triangle", "diamond", "cross")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 45, 45), "green": (45, 205, 60), "blue": (50, 70, 230), "yellow": (230, 200, 30)}
VOC_LIKE_CLASSES = tuple(f"{c}_{s}" for c in COLOURS for s in SHAPES)
IMAGE_SIZES = ((500, 375), (375, 500), (500, 333), (333, 500))
IMAGE_SIZE_WEIGHTS = (0.6, 0.2, 0.15, 0.05)
EXTRA_OBJECTS_MEAN = 1.4      # objects per image: 1 + Poisson(this), capped at MAX_OBJECTS
MAX_OBJECTS = 8
SAME_CLASS_P = 0.8            # a further object repeats the first object's class
SIZE_RANGE = (24, 260)        # object side in pixels, log-uniform
DIFFICULT_BELOW = 30          # smaller objects are marked difficult
BACKGROUNDS = ("plain", "clutter")


def draw_voc_like_image(rng: np.random.Generator,
                        clutter: np.random.Generator | None = None) -> tuple[np.ndarray, list[VOCObject]]:
    """One image (uint8 [H, W, 3]) and its objects as VOC boxes (1-based inclusive).

    ``clutter``, when given, draws a cluttered background (:mod:`.clutter`)
    in place of the plain one. The plain one is still drawn from ``rng``, so
    the size and the objects are those of the plain image of the same ``rng``.
    """
    width, height = IMAGE_SIZES[int(rng.choice(len(IMAGE_SIZES), p=IMAGE_SIZE_WEIGHTS))]
    image = _draw_background(rng, width, height)
    if clutter is not None:
        image = draw_clutter(clutter, width, height)
    count = min(1 + int(rng.poisson(EXTRA_OBJECTS_MEAN)), MAX_OBJECTS)
    first = int(rng.integers(len(VOC_LIKE_CLASSES)))
    taken, objects = [], []
    for k in range(count):
        cls = first if k == 0 or rng.random() < SAME_CLASS_P else int(rng.integers(len(VOC_LIKE_CLASSES)))
        colour_name, shape = VOC_LIKE_CLASSES[cls].split("_")
        size = int(round(np.exp(rng.uniform(np.log(SIZE_RANGE[0]), np.log(SIZE_RANGE[1])))))
        size = min(size, min(width, height) - 2 * EDGE_MARGIN)
        corner = _place(rng, size, width, height, taken)
        if corner is None:
            continue  # no room left; fewer objects is fine
        box = paint_shape(image, rng, shape, COLOURS[colour_name], corner, size)
        taken.append(_Object(VOC_LIKE_CLASSES[cls], *box, difficult=False))
        objects.append(VOCObject(VOC_LIKE_CLASSES[cls], box[0] + 1, box[1] + 1, box[2] + 1, box[3] + 1,
                                 size < DIFFICULT_BELOW))
    return np.clip(image, 0, 255).astype(np.uint8), objects


def make_voc_like(root: str | os.PathLike, num_train: int, num_test: int, seed: int = 0,
                  progress: bool = False, background: str = "plain") -> Path:
    """Write a VOC 2007-shaped dataset under ``root`` (VOC layout) and return ``root``.

    Image ids are zero-padded running numbers, trainval first; an image that
    already exists with its annotation is kept (the output is deterministic),
    so a bigger set can be grown from a smaller one with the same seed and
    background. ``background`` is one of BACKGROUNDS (module docstring).
    """
    if background not in BACKGROUNDS:
        raise ValueError(f"background {background!r} is not one of {', '.join(BACKGROUNDS)}")
    root, ids = voc_layout(root, num_train, num_test)
    for k in progress_of(range(len(ids)), desc="generate", unit="img", enabled=progress):
        jpg, xml = root / "JPEGImages" / f"{ids[k]}.jpg", root / "Annotations" / f"{ids[k]}.xml"
        if jpg.exists() and xml.exists():
            continue
        clutter = np.random.default_rng([seed, k, 7, 1]) if background == "clutter" else None
        image, objects = draw_voc_like_image(np.random.default_rng([seed, k, 7]), clutter)
        write_bytes_atomic(jpg, _encode_image(image, "jpg"))
        write_text_atomic(xml, format_voc_xml(jpg.name, image.shape[1], image.shape[0], objects,
                                              folder="VOC2007like"))
    write_splits(root, ids, num_train)
    return root
