"""R-CNN mode: features from warped per-window crops, for measuring SPP-net against.

Each window is enlarged so that, once warped to ``crop_size`` x ``crop_size``,
it has ``context_pad`` pixels of image context on every side (Girshick et al.
2014, "padding p = 16"); the part outside the image is left at the mean
pixel, i.e. zero after preprocessing. The crops go through the same conv layers
and the same pyramid (over the whole crop's map), so every later stage (fc,
SVM, box regression) is shared with SPP-net. The only difference is where the
features come from: N conv passes per image instead of one per scale.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from ..boxes import as_box_tensor
from ..fileio import (UNREADABLE_ENTRY_ERRORS, cache_entry_path, dir_size_bytes, params_digest,
                     remove_stale_temp_files, save_npz_atomic)
from .pyramid import SpatialPyramidPool
from ..threads import POOL_THREADS, limit_threads
from ..timing import timed_stage
from .pool5 import ImageSource, WindowFeatures

logger = logging.getLogger(__name__)

# Crops per forward pass: large enough to keep the BLAS busy, small enough
# for memory (64 x 3 x 224 x 224 floats = 38 MB).
CROP_BATCH = 64


def context_window(box: np.ndarray, crop_size: int, context_pad: int) -> np.ndarray:
    """The box enlarged so ``context_pad`` of the ``crop_size`` output pixels are context.

    Returns (x1, y1, x2, y2) in image coordinates; it may extend beyond the image.
    """
    scale = crop_size / (crop_size - 2 * context_pad)
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    hw, hh = (box[2] - box[0]) / 2 * scale, (box[3] - box[1]) / 2 * scale
    return np.array([cx - hw, cy - hh, cx + hw, cy + hh], np.float64)


def warp_crop(image: np.ndarray, box: np.ndarray, preprocess, crop_size: int, context_pad: int) -> Tensor:
    """One warped, preprocessed crop [3, crop_size, crop_size] of RGB uint8 ``image``."""
    import cv2

    h, w = image.shape[:2]
    x1, y1, x2, y2 = context_window(box, crop_size, context_pad)
    sx, sy = crop_size / max(x2 - x1, 1e-6), crop_size / max(y2 - y1, 1e-6)
    # The part of the enlarged window inside the image, in whole pixels.
    cx1, cy1 = max(0, int(np.floor(x1))), max(0, int(np.floor(y1)))
    cx2, cy2 = min(w, int(np.ceil(x2))), min(h, int(np.ceil(y2)))
    out = torch.zeros(3, crop_size, crop_size)
    if cx2 <= cx1 or cy2 <= cy1:
        return out
    # Where that part lands in the output square.
    ox1, oy1 = int(round((cx1 - x1) * sx)), int(round((cy1 - y1) * sy))
    ox2, oy2 = int(round((cx2 - x1) * sx)), int(round((cy2 - y1) * sy))
    ox1, oy1 = min(max(ox1, 0), crop_size - 1), min(max(oy1, 0), crop_size - 1)
    ox2, oy2 = max(min(ox2, crop_size), ox1 + 1), max(min(oy2, crop_size), oy1 + 1)
    patch = cv2.resize(image[cy1:cy2, cx1:cx2], (ox2 - ox1, oy2 - oy1), interpolation=cv2.INTER_LINEAR)
    out[:, oy1:oy2, ox1:ox2] = preprocess.apply(patch)
    return out


@torch.inference_mode()
def rcnn_pool5(backbone, image: np.ndarray, windows, pool: SpatialPyramidPool, crop_size: int,
               context_pad: int) -> Tensor:
    """pool5 vectors [N, D] of ``windows`` from warped crops (one conv pass per window)."""
    windows = as_box_tensor(windows).numpy()
    dim = pool.output_dim(backbone.out_channels)
    out = torch.zeros(len(windows), dim)
    for start in range(0, len(windows), CROP_BATCH):
        batch = windows[start:start + CROP_BATCH]
        crops = torch.stack([warp_crop(image, b, backbone.preprocess, crop_size, context_pad)
                             for b in batch]).to(backbone.device)
        maps = backbone(crops.contiguous(memory_format=torch.channels_last)).float().cpu()
        _, _, mh, mw = maps.shape
        whole = torch.tensor([[0, 0, mw, mh]])
        with limit_threads(POOL_THREADS):  # as SPP's pooling: see detector/threads.py
            for i in range(len(batch)):
                out[start + i] = pool(maps[i].contiguous(), whole)[0]
    return out


class CropFeatures(WindowFeatures):
    """R-CNN mode: each window warped to ``crop_size`` with ``context_pad`` px of context,
    convolved on its own and pooled over its whole map by the same pyramid."""

    def __init__(self, backbone, pool: SpatialPyramidPool, crop_size: int, context_pad: int,
                 cache: "WindowFeatureCache | None" = None):
        super().__init__(backbone, pool)
        self.crop_size = crop_size
        self.context_pad = context_pad
        self.cache = cache

    def with_cache(self, root: str | os.PathLike) -> "CropFeatures":
        key = params_digest([self.backbone.digest(), {"context_pad": self.context_pad,
                                                      "crop_size": self.crop_size},
                             list(self.pool.levels)])
        return CropFeatures(self.backbone, self.pool, self.crop_size, self.context_pad,
                            WindowFeatureCache(Path(root) / "rcnn_pool5", key))

    def _compute(self, image: ImageSource, boxes) -> Tensor:
        return rcnn_pool5(self.backbone, image.pixels(), boxes, self.pool, self.crop_size, self.context_pad)

    def pool5(self, image: ImageSource, windows, timings: dict | None = None,
              scale_rng: np.random.Generator | None = None) -> Tensor:
        windows = as_box_tensor(windows)
        if len(windows) == 0:
            return torch.zeros(0, self.output_dim)
        with timed_stage(timings, "conv"):
            if self.cache is None or not image.cacheable:
                return self._compute(image, windows)
            return self.cache.lookup(image, windows.numpy(), self._compute)

    def cache_bytes(self) -> int:
        return 0 if self.cache is None else self.cache.size_bytes()


class WindowFeatureCache:
    """R-CNN's own cache: pool5 of every warped window, per image (float16 on disk).

    This is what SPP-net avoids: it grows with the number of windows (R-CNN:
    ~200 GB for VOC 2007, against ~20 GB of conv5 maps for SPP-net). Entries
    hold the windows they were computed for and the image's digest; windows
    not yet in an entry are computed and appended, atomically. The folder's
    key covers everything a vector depends on: the backbone's weights and
    preprocessing, the crop geometry and the pyramid levels.
    """

    def __init__(self, root: str | os.PathLike, key: str):
        self.dir = Path(root) / key
        self.dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(self.dir)

    def lookup(self, image: ImageSource, boxes: np.ndarray,
               compute: Callable[[ImageSource, np.ndarray], Tensor]) -> Tensor:
        """pool5 [N, D] of ``boxes`` in ``image``; ``compute`` fills in the windows not cached yet."""
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        path = cache_entry_path(self.dir, image.key, ".npz")
        digest = image.digest()
        cached_boxes, cached = np.zeros((0, 4), np.float32), None
        if path.exists():
            try:
                with np.load(path, allow_pickle=False) as z:
                    if str(z["digest"]) == digest:
                        cached_boxes, cached = z["boxes"], z["features"]
            except UNREADABLE_ENTRY_ERRORS as e:
                logger.warning("%s: unreadable cache entry %s (%s); recomputing", image.key, path, e)
        row_of = {tuple(b): i for i, b in enumerate(cached_boxes.tolist())}
        missing = [i for i, b in enumerate(boxes.tolist()) if tuple(b) not in row_of]
        if missing:
            new_boxes = np.unique(boxes[missing], axis=0)
            feats = compute(image, new_boxes).numpy().astype(np.float16)
            cached_boxes = np.concatenate([cached_boxes, new_boxes])
            cached = feats if cached is None else np.concatenate([cached, feats])
            save_npz_atomic(path, boxes=cached_boxes, features=cached, digest=np.array(digest))
            row_of = {tuple(b): i for i, b in enumerate(cached_boxes.tolist())}
        rows = [row_of[tuple(b)] for b in boxes.tolist()]
        return torch.from_numpy(cached[rows].astype(np.float32))

    def size_bytes(self) -> int:
        return dir_size_bytes(self.dir, "*.npz")
