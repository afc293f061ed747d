"""Every image of a split checked once, up front, before any stage works on it.

A cheap decode (JPEGs at 1/8 scale, which still reads every byte, so
truncation is caught) and the real, EXIF-corrected size compared with the
annotation's. Results are cached by file path, size and modification time,
so a second run over 10k images costs a few stat calls; images are checked
on threads (Pillow and hashlib release the GIL).

- A file that does not decode is skipped with one warning that lists every
  such file (``strict=True``: one error listing them instead), and the
  caller records the list in its report.
- An image whose size differs from its annotation is always an error (every
  mismatch of the split in one message): the boxes would be silently wrong.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from PIL import Image, UnidentifiedImageError

from ..fileio import write_json_atomic
from ..progress import progress_of
from ..records import ImageRecord
from .base import DatasetError

logger = logging.getLogger(__name__)

# How many problems one message lists before it says "and N more".
MAX_LISTED = 20
# Fewer unchecked images than this take under a second: no bar, only the end-of-stage line.
SHOW_PROGRESS_FROM = 50
# Bump when the checks change, so cached verdicts are redone.
CHECK_VERSION = 1
# EXIF orientations that swap width and height (rotations by 90 or 270 degrees).
_TRANSPOSING = (5, 6, 7, 8)


@dataclass(frozen=True)
class ImageCheck:
    """What one image file is: its content digest, its size as displayed, and a problem ("" if none)."""

    digest: str
    width: int
    height: int
    stored_width: int
    stored_height: int
    problem: str = ""


@dataclass(frozen=True)
class BadImage:
    path: str
    reason: str


@dataclass(frozen=True)
class VerifiedImages:
    """A split after the check: the usable records (in order), their digests, the skipped files."""

    records: tuple[ImageRecord, ...]
    digests: dict[str, str]
    bad: tuple[BadImage, ...]

    def bad_as_dicts(self) -> list[dict]:
        return [{"file": b.path, "reason": b.reason} for b in self.bad]


def check_image(path: str | os.PathLike) -> ImageCheck:
    """Digest, decode (JPEG at 1/8 scale) and sizes of one image file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        return ImageCheck("", 0, 0, 0, 0, f"cannot read file ({e.strerror or e})")
    digest = hashlib.sha1(data).hexdigest()[:16]  # the same digest as fileio.file_digest
    if not data:
        return ImageCheck(digest, 0, 0, 0, 0, "empty file")
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
            im.draft("RGB", (max(1, w // 8), max(1, h // 8)))
            im.load()
    except UnidentifiedImageError:
        return ImageCheck(digest, 0, 0, 0, 0, "not an image file (format not recognised)")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        return ImageCheck(digest, 0, 0, 0, 0, f"corrupt or truncated image ({e})")
    shown = (h, w) if orientation in _TRANSPOSING else (w, h)
    return ImageCheck(digest, shown[0], shown[1], w, h)


def _size_problem(record: ImageRecord, check: ImageCheck) -> str:
    if (check.width, check.height) == (record.width, record.height):
        return ""
    if (check.stored_width, check.stored_height) == (record.width, record.height):
        return (f"annotation says {record.width}x{record.height} but the image is "
                f"{check.width}x{check.height} once its EXIF orientation tag is applied (the file "
                f"stores {check.stored_width}x{check.stored_height} pixels, shown rotated): the boxes "
                f"were likely drawn on the unrotated pixels; remove the orientation tag "
                f"(e.g. exiftool -Orientation= FILE) or annotate the rotated image")
    return (f"annotation says {record.width}x{record.height} but the image is "
            f"{check.width}x{check.height} (resized after annotation?)")


def _listing(items: Sequence[str]) -> str:
    shown = "\n  ".join(items[:MAX_LISTED])
    more = f"\n  ... and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return f"\n  {shown}{more}"


class _CheckCache:
    """Verdicts keyed by absolute path, size and modification time, in one JSON file."""

    def __init__(self, path: Path | None):
        self.path = path
        self.entries: dict[str, list] = {}
        self.dirty = False
        if path is not None and path.is_file():
            try:
                data = json.loads(path.read_text())
                if data.get("version") == CHECK_VERSION:
                    self.entries = data.get("entries", {})
            except (ValueError, OSError, AttributeError):
                self.entries = {}

    @staticmethod
    def _stamp(path: Path) -> list | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return [st.st_size, st.st_mtime_ns]

    def get(self, path: Path) -> ImageCheck | None:
        entry = self.entries.get(str(path.resolve()))
        stamp = self._stamp(path)
        if entry is None or stamp is None or entry[0] != stamp:
            return None
        return ImageCheck(*entry[1])

    def put(self, path: Path, check: ImageCheck) -> None:
        stamp = self._stamp(path)
        if stamp is None or self.path is None:
            return
        self.entries[str(path.resolve())] = [stamp, [check.digest, check.width, check.height,
                                                     check.stored_width, check.stored_height,
                                                     check.problem]]
        self.dirty = True

    def save(self) -> None:
        if self.path is not None and self.dirty:
            write_json_atomic(self.path, {"version": CHECK_VERSION, "entries": self.entries})


def verify_images(records: Sequence[ImageRecord], cache_file: str | os.PathLike | None = None,
                  strict: bool = False, workers: int = 0, progress: bool = True,
                  what: str = "split") -> VerifiedImages:
    """Check every record's image; return the usable ones.

    Args:
        records: the split.
        cache_file: a JSON file keeping verdicts between runs (None: no cache).
        strict: an unreadable image is an error instead of a skip.
        workers: threads (0: one per core).
        what: how messages name the set ("trainval split", ...).
    Raises:
        DatasetError: image sizes that disagree with their annotations (always),
            unreadable images (with ``strict``), or no usable image at all.
    """
    cache = _CheckCache(Path(cache_file) if cache_file else None)
    checks: dict[int, ImageCheck] = {}
    todo = []
    for i, r in enumerate(records):
        hit = cache.get(Path(r.path))
        if hit is None:
            todo.append(i)
        else:
            checks[i] = hit
    n = workers or os.cpu_count() or 1
    if todo:
        with ThreadPoolExecutor(max_workers=n) as pool:
            results = pool.map(lambda i: check_image(records[i].path), todo)
            for i, check in progress_of(zip(todo, results), total=len(todo), desc=f"check images ({what})",
                                        unit="img", enabled=progress and len(todo) >= SHOW_PROGRESS_FROM):
                checks[i] = check
                cache.put(Path(records[i].path), check)
        cache.save()

    bad, mismatched, good, digests = [], [], [], {}
    for i, r in enumerate(records):
        c = checks[i]
        if c.problem:
            bad.append(BadImage(str(r.path), c.problem))
            continue
        size_problem = _size_problem(r, c)
        if size_problem:
            mismatched.append(f"{r.path}: {size_problem}")
            continue
        good.append(r)
        digests[r.image_id] = c.digest
    if mismatched:
        raise DatasetError(what, f"{len(mismatched)} image(s) differ in size from their annotation:"
                                 + _listing(mismatched))
    if bad:
        lines = [f"{b.path}: {b.reason}" for b in bad]
        if strict:
            raise DatasetError(what, f"{len(bad)} unreadable image(s) (data.strict_images=true):"
                                     + _listing(lines))
        logger.warning("%s: skipping %d unreadable image(s) (data.strict_images=true makes this an "
                       "error):%s", what, len(bad), _listing(lines))
    if not good:
        raise DatasetError(what, "no usable image")
    return VerifiedImages(tuple(good), digests, tuple(bad))
