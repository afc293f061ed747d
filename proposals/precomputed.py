"""Reading and writing precomputed proposal files.

Formats (converted once, here, to the project's boxes: float32 (x1, y1, x2, y2),
continuous 0-based pixels):

- ``.mat`` as distributed with R-CNN and fast-rcnn (``selective_search_data/
  voc_2007_test.mat``): ``images`` a cell array of image ids, ``boxes`` a
  cell array of [N, 4] arrays in (y1, x1, y2, x2), 1-based INCLUSIVE pixels.
  Pixel column c (1-based) covers [c - 1, c) continuously, so
  x1 = x1_mat - 1 and x2 = x2_mat (the same rule as the VOC loader).
  fast-rcnn reads the same file as ``boxes[:, (1, 0, 3, 2)] - 1`` because its
  boxes are 0-based inclusive; the continuous right edge is one more.
- ``.npz`` (ours): one array per image id, float32 [N, 4] in the project's
  convention. Written by :func:`save_precomputed_npz`.
- ``.json`` (ours): ``{"format": "xyxy-0based-continuous", "boxes": {id: [[x1, y1, x2, y2], ...]}}``.
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from detector.fileio import save_npz_atomic, write_json_atomic

from .config import ProposalError

JSON_FORMAT = "xyxy-0based-continuous"


def convert_mat_boxes(boxes: np.ndarray) -> np.ndarray:
    """R-CNN .mat (y1, x1, y2, x2), 1-based inclusive [N, 4] -> project (x1, y1, x2, y2) [N, 4]."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    out = np.stack([b[:, 1] - 1.0, b[:, 0] - 1.0, b[:, 3], b[:, 2]], axis=1)
    return out.astype(np.float32)


def _mat_string(cell, path: Path) -> str:
    """Image id from one entry of a MATLAB cell array of strings (as scipy nests it)."""
    v = cell
    while isinstance(v, np.ndarray):
        if v.size != 1 and v.dtype.kind not in "US":
            raise ProposalError(f"{path}: 'images' entries must be strings")
        if v.dtype.kind in "US":
            return str(v.reshape(-1)[0]) if v.size else ""
        v = v.reshape(-1)[0]
    return str(v)


def read_mat_proposals(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read an R-CNN/fast-rcnn selective search .mat file -> {image_id: float32 [N, 4]}."""
    import scipy.io

    path = Path(path)
    try:
        data = scipy.io.loadmat(str(path))
    except NotImplementedError:
        raise ProposalError(f"{path}: MATLAB v7.3 (HDF5) file; re-save it with "
                            "save(..., '-v7') or convert it to .npz") from None
    except (ValueError, OSError, TypeError) as e:
        raise ProposalError(f"{path}: not a readable .mat file ({e})") from None
    for key in ("boxes", "images"):
        if key not in data:
            raise ProposalError(f"{path}: no '{key}' variable (found "
                                f"{', '.join(k for k in data if not k.startswith('__'))})")
    boxes = np.asarray(data["boxes"]).reshape(-1)
    images = np.asarray(data["images"]).reshape(-1)
    if len(boxes) != len(images):
        raise ProposalError(f"{path}: {len(images)} images but {len(boxes)} box arrays")
    out = {}
    for name, b in zip(images, boxes):
        b = np.asarray(b)
        if b.size and (b.ndim != 2 or b.shape[1] != 4):
            raise ProposalError(f"{path}: boxes of {_mat_string(name, path)} have shape {b.shape}, "
                                "expected [N, 4]")
        out[_mat_string(name, path)] = convert_mat_boxes(b)
    return out


def read_npz_proposals(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            out = {k: np.asarray(data[k], np.float32) for k in data.files}
    except (ValueError, OSError) as e:
        raise ProposalError(f"{path}: not a readable .npz file ({e})") from None
    for k, v in out.items():
        if v.size and (v.ndim != 2 or v.shape[1] != 4):
            raise ProposalError(f"{path}: boxes of {k} have shape {v.shape}, expected [N, 4]")
        out[k] = v.reshape(-1, 4)
    return out


def read_json_proposals(path: Path) -> dict[str, np.ndarray]:
    try:
        data = json.loads(path.read_text())
    except (ValueError, OSError) as e:
        raise ProposalError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(data, dict) or data.get("format") != JSON_FORMAT or "boxes" not in data:
        raise ProposalError(f"{path}: expected {{'format': '{JSON_FORMAT}', 'boxes': {{id: [[x1, y1, "
                            "x2, y2], ...]}}}}")
    out = {}
    for k, v in data["boxes"].items():
        arr = np.asarray(v, dtype=np.float32)
        if arr.size and (arr.ndim != 2 or arr.shape[1] != 4):
            raise ProposalError(f"{path}: boxes of {k} have shape {arr.shape}, expected [N, 4]")
        out[str(k)] = arr.reshape(-1, 4)
    return out


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, mtime_ns: int, size: int) -> dict[str, np.ndarray]:
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".mat":
        return read_mat_proposals(p)
    if suffix == ".npz":
        return read_npz_proposals(p)
    if suffix == ".json":
        return read_json_proposals(p)
    raise ProposalError(f"{p}: unknown proposal file type {suffix!r} (expected .mat, .npz or .json)")


def load_precomputed(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """{image_id: float32 [N, 4]} from a .mat/.npz/.json file, in the file's order.

    Memoised on (path, modification time, size), so per-image lookups in a
    loop read the file once and an edited file is read again.
    """
    p = Path(path)
    if not p.is_file():
        raise ProposalError(f"{p}: precomputed proposal file not found")
    st = p.stat()
    return _load_cached(str(p.resolve()), st.st_mtime_ns, st.st_size)


def save_precomputed_npz(path: str | os.PathLike, boxes: Mapping[str, np.ndarray]) -> None:
    """Write {image_id: [N, 4]} as our .npz format (atomic)."""
    save_npz_atomic(path, **{k: np.asarray(v, np.float32).reshape(-1, 4) for k, v in boxes.items()})


def save_precomputed_json(path: str | os.PathLike, boxes: Mapping[str, np.ndarray]) -> None:
    """Write {image_id: [N, 4]} as our JSON format (atomic)."""
    write_json_atomic(path, {"format": JSON_FORMAT, "boxes": {
        k: np.asarray(v, np.float32).reshape(-1, 4).tolist() for k, v in boxes.items()}})
