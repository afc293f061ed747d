"""A photo-like cluttered background: what makes selective search find as many windows as on a photo.

Selective search's window count follows the number of segments its first
(Felzenszwalb-Huttenlocher) segmentation cuts an image into. The smooth grey
background of :mod:`detector.data.synthetic` gives few segments (~300-450
windows per 500 x 375 image with the shipped proposal settings); R-CNN and
SPP-net report ~2000 for VOC photographs. This background is built from the things that cut a
photo into many segments, all procedural:

- a two-colour linear gradient (sky, walls, floors),
- value noise at several scales (lighting and surface shading),
- many overlapping patches (polygons, ellipses, rotated rectangles), sizes
  log-uniform from a few pixels to half the image, each a flat colour or a
  striped or noisy texture, some of them blurred (out-of-focus things),
- a last slight blur and pixel noise (the camera).

The patch colours are muted (channel spread < CLUTTER_SATURATION) so the
saturated objects drawn on top stay what separates the classes. Output is a
pure function of the generator's state.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# Patches per 500 x 375 image (scaled by area): the knob that sets the window
# count. Tuned with the shipped proposal settings on the first images of seed
# 0 (arrays, no JPEG): 160 gave a median of ~1770 windows found (4 images),
# 250 ~1975 and 290 ~2140 (8 images); 270 gives 2000 on 30 read from their
# JPEG files (docs/benchmarks.md, "VOC-density generated set (issue 29)").
CLUTTER_PATCHES = 270
CLUTTER_PATCH_SIDE = (6.0, 0.5)   # patch side: from 6 px to half the longer image side, log-uniform
CLUTTER_SATURATION = 90           # max - min channel of a patch colour (objects' colours: >= 150)
NOISE_SCALES = (64, 16, 4)        # value-noise cell sizes in pixels
NOISE_AMPLITUDE = (28.0, 14.0, 6.0)
PIXEL_NOISE = 4.0                 # std of the last per-pixel noise


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    """A random RGB colour whose channels spread less than CLUTTER_SATURATION."""
    grey = rng.uniform(30, 225)
    return np.clip(grey + rng.uniform(-CLUTTER_SATURATION / 2, CLUTTER_SATURATION / 2, size=3), 0, 255)


def _value_noise(rng: np.random.Generator, width: int, height: int, cell: int) -> np.ndarray:
    """float32 [H, W] in about [-1, 1]: a random grid of ``cell`` px, bilinearly upsampled."""
    grid = rng.uniform(-1, 1, size=(height // cell + 2, width // cell + 2)).astype(np.float32)
    big = np.asarray(Image.fromarray(grid).resize((grid.shape[1] * cell, grid.shape[0] * cell),
                                                  Image.BILINEAR))
    oy, ox = rng.integers(0, cell, size=2)
    return big[oy:oy + height, ox:ox + width]


def _gradient(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """float32 [H, W, 3]: a linear ramp between two muted colours in a random direction."""
    angle = rng.uniform(0, 2 * np.pi)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    t = x * np.cos(angle) + y * np.sin(angle)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
    a, b = _muted_colour(rng), _muted_colour(rng)
    return (a + t[:, :, None] * (b - a)).astype(np.float32)


def _patch_mask(rng: np.random.Generator, side: int) -> Image.Image:
    """An 'L' mask (side x side) of a random polygon, ellipse or rotated rectangle."""
    mask = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(mask)
    kind = int(rng.integers(3))
    c = side / 2
    if kind == 0:  # an irregular polygon around the centre
        n = int(rng.integers(3, 9))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = rng.uniform(0.3, 0.5, n) * side
        draw.polygon([(c + r * np.cos(a), c + r * np.sin(a)) for a, r in zip(angles, radii)], fill=255)
    elif kind == 1:
        rx, ry = rng.uniform(0.15, 0.5, 2) * side
        draw.ellipse([c - rx, c - ry, c + rx, c + ry], fill=255)
    else:  # a rectangle (a bar, a plank, a window) at a random angle
        hw, hh = rng.uniform(0.05, 0.5) * side, rng.uniform(0.05, 0.5) * side
        a = rng.uniform(0, np.pi)
        corners = np.array([[-hw, -hh], [hw, -hh], [hw, hh], [-hw, hh]]) @ np.array(
            [[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
        draw.polygon([(c + px, c + py) for px, py in corners], fill=255)
    return mask


def _patch_fill(rng: np.random.Generator, side: int) -> np.ndarray:
    """float32 [side, side, 3]: a flat muted colour, stripes of two colours, or a noisy colour."""
    colour = _muted_colour(rng)
    kind = int(rng.integers(3))
    if kind == 0:
        return np.broadcast_to(colour, (side, side, 3)).astype(np.float32)
    if kind == 1:  # stripes at a random angle and period
        y, x = np.mgrid[0:side, 0:side].astype(np.float32)
        a, period = rng.uniform(0, np.pi), rng.uniform(3, max(4.0, side / 3))
        on = (np.sin((x * np.cos(a) + y * np.sin(a)) * 2 * np.pi / period) > 0)[:, :, None]
        return np.where(on, colour, _muted_colour(rng)).astype(np.float32)
    return (colour + rng.normal(0, rng.uniform(5, 20), size=(side, side, 1))).astype(np.float32)


def draw_clutter(rng: np.random.Generator, width: int, height: int,
                 patches: int = CLUTTER_PATCHES) -> np.ndarray:
    """A cluttered background, float32 [H, W, 3] in [0, 255]; ``patches`` per 500 x 375 image."""
    image = _gradient(rng, width, height)
    for cell, amplitude in zip(NOISE_SCALES, NOISE_AMPLITUDE):
        image += amplitude * _value_noise(rng, width, height, cell)[:, :, None]
    lo, hi = np.log(CLUTTER_PATCH_SIDE[0]), np.log(CLUTTER_PATCH_SIDE[1] * max(width, height))
    for _ in range(int(round(patches * width * height / (500 * 375)))):
        side = int(np.exp(rng.uniform(lo, hi))) + 2
        x0, y0 = int(rng.integers(-side // 2, width - side // 2)), int(rng.integers(-side // 2, height - side // 2))
        mask = _patch_mask(rng, side)
        if rng.random() < 0.3:  # out of focus: a soft edge
            mask = mask.filter(ImageFilter.GaussianBlur(rng.uniform(1, 3)))
        alpha = np.asarray(mask, np.float32)[:, :, None] / 255
        fill = _patch_fill(rng, side)
        # The part of the patch square inside the image.
        ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + side, width), min(y0 + side, height)
        if ix1 <= ix0 or iy1 <= iy0:
            continue
        sub = np.s_[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0]
        region = image[iy0:iy1, ix0:ix1]
        region += alpha[sub] * (fill[sub] - region)
    image = np.clip(image, 0, 255)
    # The camera: a slight blur, then sensor noise.
    blurred = Image.fromarray(image.astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.6))
    return np.asarray(blurred, np.float32) + rng.normal(0, PIXEL_NOISE, size=(height, width, 3)).astype(np.float32)
