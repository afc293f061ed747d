"""A disk cache of proposals for one (dataset, split, method, parameters).

Layout::

    cache_dir/<dataset_key>/<split>/<method>-<params digest>/
        params.json          the parameters the digest was taken of
        <image_id>.npz       boxes float32 [N, 4], image_digest, params_digest, seconds
        all.npz              consolidated copy of a finished split (fast load_all)

- The folder name is the digest of every parameter that changes the boxes
  (plus the OpenCV version and a store version), so a new setting never sees
  an old setting's boxes.
- Each entry records the SHA-1 of the image file it came from; an entry whose
  image changed is stale and is recomputed.
- Every file is written atomically (``detector.fileio``): a killed run leaves
  whole entries only, and the next run computes just the missing ones.
- ``all.npz`` is removed whenever an entry is written and rewritten when a
  split completes, so it is never out of date with the entries.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable
from urllib.parse import unquote

import cv2
import numpy as np

from detector.fileio import (UNREADABLE_ENTRY_ERRORS, cache_entry_path, file_digest, params_digest,
                             remove_stale_temp_files, safe_file_name, save_npz_atomic, write_json_atomic)

from .config import DENSE_FIELDS, DENSE_METHODS, ProposalConfig, ProposalError

# Bump when a change in this package changes the boxes for the same parameters.
STORE_VERSION = 1
# Fields of ProposalConfig that do not change the boxes (so they do not key the cache).
RUNTIME_FIELDS = ("workers", "min_recall", "auto", "auto_target", "auto_sample")
CONSOLIDATED = "all.npz"


def cache_params(cfg: ProposalConfig) -> dict:
    """Everything that determines the boxes, as a JSON-able dict (the cache key)."""
    # The dense grid's fields key only the methods that read them, so adding
    # them left every other method's existing caches (and stage keys) valid.
    # train_max_side picks which search a training split gets (ProposalConfig.for_training);
    # the boxes are the chosen search's, keyed by its max_side.
    unread = RUNTIME_FIELDS + ("train_max_side",) + (() if cfg.method in DENSE_METHODS else DENSE_FIELDS)
    params = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in unread}
    params["store_version"] = STORE_VERSION
    if cfg.method == "precomputed":
        # Key by the file's content, not only its name: a re-exported file is new boxes.
        params["path_digest"] = file_digest(cfg.path) if Path(cfg.path).is_file() else "missing"
    else:
        params["opencv_version"] = cv2.__version__
    return params


@dataclass(frozen=True)
class StoreEntry:
    """One image's cached proposals."""

    boxes: np.ndarray  # float32 [N, 4]
    image_digest: str
    params_digest: str
    seconds: float  # time of the search alone (no image decoding), one core


class ProposalStore:
    """Proposals of one split under one parameter setting (see module docstring)."""

    def __init__(self, root: str | os.PathLike, params: dict):
        self.root = Path(root)
        self.params = params
        self.digest = params_digest(params)
        self._all: dict[str, StoreEntry] | None = None

    @classmethod
    def open(cls, cache_dir: str | os.PathLike, dataset_key: str, split: str,
             cfg: ProposalConfig) -> "ProposalStore":
        """The store for these parameters (created empty if new)."""
        params = cache_params(cfg)
        digest = params_digest(params)
        root = Path(cache_dir) / safe_file_name(dataset_key) / safe_file_name(split) / f"{cfg.method}-{digest}"
        root.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(root)
        meta = root / "params.json"
        if meta.is_file():
            try:
                stored = json.loads(meta.read_text())
            except ValueError:
                stored = None
            if stored != json.loads(json.dumps(params)):
                raise ProposalError(f"{meta}: parameters do not match the folder's digest "
                                    f"{digest}; the cache was edited by hand, remove {root}")
        else:
            write_json_atomic(meta, params)
        return cls(root, params)

    def entry_path(self, image_id: str) -> Path:
        return cache_entry_path(self.root, image_id, ".npz")

    def read_entry(self, image_id: str) -> StoreEntry | None:
        """The entry of ``image_id``, or None if absent or unreadable (a broken file is stale)."""
        path = self.entry_path(image_id)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                entry = StoreEntry(boxes=np.asarray(z["boxes"], np.float32).reshape(-1, 4),
                                   image_digest=str(z["image_digest"]),
                                   params_digest=str(z["params_digest"]),
                                   seconds=float(z["seconds"]))
        except UNREADABLE_ENTRY_ERRORS:
            return None
        return entry

    def is_current(self, image_id: str, image_digest: str) -> bool:
        """True if a readable entry exists for this image content and these parameters."""
        entry = self.read_entry(image_id)
        return (entry is not None and entry.image_digest == image_digest
                and entry.params_digest == self.digest)

    def write(self, image_id: str, boxes: np.ndarray, image_digest: str, seconds: float) -> None:
        """Store one image's windows (atomic); invalidates the consolidated file."""
        save_npz_atomic(self.entry_path(image_id), boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                        image_digest=np.array(image_digest), params_digest=np.array(self.digest),
                        seconds=np.array(float(seconds)))
        (self.root / CONSOLIDATED).unlink(missing_ok=True)
        self._all = None

    def consolidate(self, image_ids: Iterable[str]) -> None:
        """Write ``all.npz`` holding the entries of ``image_ids`` (all must exist)."""
        ids = list(image_ids)
        entries = []
        for i in ids:
            e = self.read_entry(i)
            if e is None:
                raise ProposalError(f"{self.entry_path(i)}: missing entry, cannot consolidate")
            entries.append(e)
        counts = np.array([len(e.boxes) for e in entries], np.int64)
        save_npz_atomic(
            self.root / CONSOLIDATED,
            image_ids=np.array(ids, dtype=str), offsets=np.concatenate([[0], np.cumsum(counts)]),
            boxes=(np.concatenate([e.boxes for e in entries]) if entries
                   else np.zeros((0, 4), np.float32)),
            image_digests=np.array([e.image_digest for e in entries], dtype=str),
            seconds=np.array([e.seconds for e in entries], np.float64),
            params_digest=np.array(self.digest))
        self._all = None

    def _load_consolidated(self) -> dict[str, StoreEntry] | None:
        path = self.root / CONSOLIDATED
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["params_digest"]) != self.digest:
                    return None
                ids, off, boxes = z["image_ids"], z["offsets"], z["boxes"]
                digests, seconds = z["image_digests"], z["seconds"]
        except UNREADABLE_ENTRY_ERRORS:
            return None
        return {str(i): StoreEntry(boxes[off[k]:off[k + 1]], str(digests[k]), self.digest,
                                   float(seconds[k])) for k, i in enumerate(ids)}

    def entries(self) -> dict[str, StoreEntry]:
        """All entries, from ``all.npz`` when present (one read), else entry by entry."""
        if self._all is None:
            self._all = self._load_consolidated()
        if self._all is not None:
            return self._all
        out = {}
        for p in sorted(self.root.glob("*.npz")):
            if p.name == CONSOLIDATED or p.name.startswith("."):
                continue
            image_id = unquote(p.stem)
            e = self.read_entry(image_id)
            if e is not None and e.params_digest == self.digest:
                out[image_id] = e
        return out

    def load(self, image_id: str) -> np.ndarray:
        """float32 [N, 4] windows of ``image_id`` in rank order."""
        if self._all is not None and image_id in self._all:
            return self._all[image_id].boxes
        entry = self.read_entry(image_id)
        if entry is None or entry.params_digest != self.digest:
            raise ProposalError(f"{self.entry_path(image_id)}: no proposals cached for image "
                                f"{image_id!r}; run tools/propose.py for this split")
        return entry.boxes

    def load_all(self) -> dict[str, np.ndarray]:
        """{image_id: float32 [N, 4]} for every cached image."""
        return {k: e.boxes for k, e in self.entries().items()}

    def __contains__(self, image_id: str) -> bool:
        return self.read_entry(image_id) is not None

    def __repr__(self) -> str:
        return f"ProposalStore({self.root})"
