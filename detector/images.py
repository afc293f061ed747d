"""Reading images safely: one function, RGB uint8 out, clear errors in.

Handles grayscale, palette, RGBA (alpha discarded, colours kept), 16-bit, BMP/PNG/JPEG/TIFF/WebP, and EXIF
orientation (phone photos are stored rotated and tagged). Corrupt, truncated
and non-image files raise :class:`ImageReadError` naming the file.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# File extensions treated as images when scanning folders.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

# Pillow refuses images above ~179 Mpx as decompression bombs. Photos of 12 to
# 100 Mpx are normal input here, so the limit is raised to 400 Mpx (still a
# guard against a hostile file), and anything bigger is a clear error.
Image.MAX_IMAGE_PIXELS = 400_000_000


class ImageReadError(ValueError):
    """An image file could not be read; the message names the file and why."""


class ImageTooSmallError(ValueError):
    """An image (or its resized input) is smaller than the network can take; the message says which."""


def check_image_size(image: np.ndarray, min_side: int, name: str = "image") -> None:
    """Raise ImageTooSmallError if the image's shorter side is under ``min_side`` px."""
    h, w = image.shape[:2]
    if min(h, w) < min_side:
        raise ImageTooSmallError(
            f"{name}: {w}x{h} px is smaller than the network's minimum input side of {min_side} px")


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def read_image(path: str | os.PathLike, data: bytes | None = None) -> np.ndarray:
    """Read ``path`` as an RGB uint8 array [H, W, 3], EXIF orientation applied.

    ``data``: the file's bytes, already read (e.g. shipped to a Ray worker
    that cannot see the file); ``path`` then only names it in errors.

    Raises:
        ImageReadError: the file is missing, not an image, truncated or corrupt.
    """
    path = Path(path)
    if data is None and not path.is_file():
        raise ImageReadError(f"{path}: no such image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path if data is None else io.BytesIO(data)) as im:
                im.load()  # decode now so truncation is caught here, not later
                im = ImageOps.exif_transpose(im)
                if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                    arr = np.asarray(im, dtype=np.float64)
                    arr = (255.0 * arr / max(arr.max(), 1.0)).astype(np.uint8)
                    return np.ascontiguousarray(np.repeat(arr[:, :, None], 3, axis=2))
                rgb = im.convert("RGB")
                return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image file (format not recognised)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageReadError(f"{path}: image too large ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{path}: corrupt or truncated image ({e})") from None


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) after EXIF orientation, read from the header only."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such image file") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image file (format not recognised)") from None
    except OSError as e:
        raise ImageReadError(f"{path}: unreadable image header ({e})") from None
    # EXIF orientations 5..8 swap width and height.
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """RGB uint8 [H, W, 3] -> JPEG bytes."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
