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

import hashlib
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .boxes import as_box_tensor
from .config import RCNNConfig
from .fileio import file_digest, params_digest, save_npz_atomic
from .pooling import SpatialPyramidPool

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
def rcnn_pool5(backbone, image: np.ndarray, windows, pool: SpatialPyramidPool, cfg: RCNNConfig) -> Tensor:
    """pool5 vectors [N, D] of ``windows`` from warped crops (one conv pass per window)."""
    windows = as_box_tensor(windows).numpy()
    dim = pool.output_dim(backbone.out_channels)
    out = torch.zeros(len(windows), dim)
    for start in range(0, len(windows), CROP_BATCH):
        batch = windows[start:start + CROP_BATCH]
        crops = torch.stack([warp_crop(image, b, backbone.preprocess, cfg.crop_size, cfg.context_pad)
                             for b in batch]).to(backbone.device)
        maps = backbone(crops.contiguous(memory_format=torch.channels_last)).float().cpu()
        _, _, mh, mw = maps.shape
        whole = torch.tensor([[0, 0, mw, mh]])
        for i in range(len(batch)):
            out[start + i] = pool(maps[i].contiguous(), whole)[0]
    return out


class WindowFeatureCache:
    """R-CNN's own cache: pool5 of every warped window, per image (float16 on disk).

    This is what SPP-net avoids: it grows with the number of windows (R-CNN:
    ~200 GB for VOC 2007, against ~20 GB of conv5 maps for SPP-net). Entries
    hold the windows they were computed for and the image's digest; windows
    not yet in an entry are computed and appended, atomically.
    """

    def __init__(self, root: str | os.PathLike, key: str):
        self.dir = Path(root) / key
        self.dir.mkdir(parents=True, exist_ok=True)

    def pool5(self, backbone, record, boxes: np.ndarray, pool: SpatialPyramidPool, cfg: RCNNConfig,
              read_image) -> Tensor:
        """pool5 [N, D] of ``boxes`` in ``record``'s image, from the cache where possible."""
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        path = self.dir / f"{record.image_id.replace('/', '__')}.npz"
        digest = file_digest(record.path)
        cached_boxes = np.zeros((0, 4), np.float32)
        cached = np.zeros((0, pool.output_dim(backbone.out_channels)), np.float16)
        if path.exists():
            try:
                with np.load(path, allow_pickle=False) as z:
                    if str(z["digest"]) == digest:
                        cached_boxes, cached = z["boxes"], z["features"]
            except (OSError, ValueError, KeyError):
                pass  # unreadable entry: recomputed below
        row_of = {tuple(b): i for i, b in enumerate(cached_boxes.tolist())}
        missing = [i for i, b in enumerate(boxes.tolist()) if tuple(b) not in row_of]
        if missing:
            new_boxes = np.unique(boxes[missing], axis=0)
            feats = rcnn_pool5(backbone, read_image(record.path), new_boxes, pool, cfg)
            cached_boxes = np.concatenate([cached_boxes, new_boxes])
            cached = np.concatenate([cached, feats.numpy().astype(np.float16)])
            save_npz_atomic(path, boxes=cached_boxes, features=cached, digest=np.array(digest))
            row_of = {tuple(b): i for i, b in enumerate(cached_boxes.tolist())}
        rows = [row_of[tuple(b)] for b in boxes.tolist()]
        return torch.from_numpy(cached[rows].astype(np.float32))

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.dir.glob("*.npz"))


def backbone_digest(backbone) -> str:
    """Digest of a backbone's name, preprocessing and weights (keys caches of a loaded model)."""
    h = hashlib.sha1(f"{type(backbone).__name__}|{backbone.preprocess}".encode())
    for name, tensor in sorted(backbone.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def window_feature_cache(root: str | os.PathLike, backbone, cfg) -> WindowFeatureCache:
    """R-CNN's per-window pool5 cache under ``root`` for ``backbone`` and config ``cfg``.

    Keyed by everything a cached vector depends on: the backbone's weights and
    preprocessing, the crop geometry and the pyramid levels (which set its
    length). Training keeps its windows under ``cache_root/rcnn_pool5``; with
    ``run_test(..., cache_rcnn_features=True)`` the test images' go under
    ``cache_root/rcnn_pool5_test``, as R-CNN's own pipeline cached the test
    set too, so re-testing a model that differs only after pool5 (another
    fine-tuning seed, other SVMs) skips the conv passes.
    """
    key = params_digest([backbone_digest(backbone), asdict(cfg.rcnn), list(cfg.pool.levels)])
    return WindowFeatureCache(root, key)
