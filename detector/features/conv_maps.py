"""Multi-scale conv5 feature maps: computed once per image per scale, cached on disk.

This is what makes SPP-net cheap: the convolutional layers run once per image
and scale (R-CNN runs them once per window), and the cache holds conv5 maps
(float16, a few MB per image) rather than per-window feature vectors.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ..fileio import (UNREADABLE_ENTRY_ERRORS, cache_entry_path, dir_size_bytes, params_digest,
                     remove_stale_temp_files, save_npz_atomic)
from ..images import check_image_size
from .preprocess import resize_image, scale_factor  # noqa: F401 (re-exported)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureMap:
    """conv5 features of one image at one scale.

    features: float32 [C, h, w]; factor: resized size / original size (the
    same along both axes); ``image_size`` (height, width) of the resized image.
    """

    features: Tensor
    factor: float
    image_size: tuple[int, int]


@torch.inference_mode()
def compute_feature_maps(backbone, image: np.ndarray, scales: Sequence[int], max_size: int,
                         name: str = "image", layers: torch.nn.Module | None = None) -> list[FeatureMap]:
    """Run the backbone's conv layers once per scale.

    Args:
        backbone: a ``detector.features.backbones.Backbone`` (frozen, eval mode).
        image: RGB uint8 [H, W, 3].
        scales: shorter-side lengths (paper: {688} or {480, 576, 688, 874, 1200}).
        max_size: cap on the longer side after resizing.
        layers: run these instead of the whole trunk (its frozen prefix, ``Backbone.split``);
            the input is the backbone's all the same.
    Returns:
        one FeatureMap per scale, in the order of ``scales``.
    """
    # Images are resized to each scale, but one smaller than a single conv5
    # cell (stride px) at its own resolution holds nothing to detect.
    check_image_size(image, max(backbone.min_input_size, backbone.stride), name)
    maps = []
    for s in scales:
        x, factor = network_input(backbone, image, s, max_size)
        # Pooling, fc and SVMs run on the CPU: the map comes back once per scale.
        fmap = (backbone(x) if layers is None else layers(backbone.check_input(x)))[0].float().cpu().contiguous()
        maps.append(FeatureMap(fmap, factor, tuple(x.shape[2:])))
    return maps


def network_input(backbone, image: np.ndarray, scale: int, max_size: int) -> tuple[Tensor, float]:
    """The image resized to ``scale`` (shorter side) and preprocessed: ([1, 3, h, w] on the
    backbone's device, channels-last; the resize factor)."""
    h, w = image.shape[:2]
    factor = scale_factor(h, w, scale, max_size)
    x = backbone.preprocess.apply(resize_image(image, factor))[None].to(backbone.device)
    return x.contiguous(memory_format=torch.channels_last), factor


def feature_cache_key(backbone_name: str, weights_digest: str, preprocess: str,
                      scales: Sequence[int], max_size: int, dtype: str) -> str:
    """Digest naming a conv5 cache: changes whenever the maps would change."""
    return params_digest({"backbone": backbone_name, "weights": weights_digest,
                          "preprocess": preprocess, "scales": list(scales),
                          "max_size": max_size, "dtype": dtype, "version": 1})


class FeatureCache:
    """conv5 maps on disk: one ``<image_id>.npz`` per image in ``root/<key>/``.

    Each file stores the maps of every scale (float16 by default), their
    factors, and the digest of the image file they came from: an entry whose
    image changed is stale and recomputed. Files are written atomically, so a
    killed run resumes where it stopped.
    """

    def __init__(self, root: str | os.PathLike, key: str, dtype: str = "float16"):
        self.dir = Path(root) / key  # made by the first save: a cache nothing is written to leaves no folder
        if self.dir.is_dir():
            remove_stale_temp_files(self.dir)
        self.dtype = np.float16 if dtype == "float16" else np.float32
        self.torch_dtype = torch.float16 if dtype == "float16" else torch.float32

    def _path(self, image_id: str) -> Path:
        return cache_entry_path(self.dir, image_id, ".npz")

    def is_current(self, image_id: str, image_digest: str) -> bool:
        """Whether a readable entry for this image content exists (reads only its digest)."""
        path = self._path(image_id)
        if not path.exists():
            return False
        try:
            with np.load(path, allow_pickle=False) as z:
                return str(z["digest"]) == image_digest and all(f"map{i}" in z for i in range(len(z["factors"])))
        except UNREADABLE_ENTRY_ERRORS as e:
            logger.warning("%s: unreadable cache entry %s (%s: %s); recomputing", image_id, path,
                           type(e).__name__, e)
            return False

    def load(self, image_id: str, image_digest: str | None = None) -> list[FeatureMap] | None:
        """The cached maps, or None when absent, unreadable or stale."""
        path = self._path(image_id)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                if image_digest is not None and str(z["digest"]) != image_digest:
                    logger.info("%s: image changed since its conv5 maps were cached; recomputing", image_id)
                    return None
                factors = z["factors"].tolist()
                sizes = z["sizes"].tolist()
                return [FeatureMap(torch.from_numpy(z[f"map{i}"].astype(np.float32)), factors[i],
                                   tuple(sizes[i])) for i in range(len(factors))]
        except UNREADABLE_ENTRY_ERRORS as e:
            logger.warning("%s: unreadable cache entry %s (%s: %s); recomputing", image_id, path,
                           type(e).__name__, e)
            return None

    def save(self, image_id: str, maps: list[FeatureMap], image_digest: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        arrays = {f"map{i}": m.features.numpy().astype(self.dtype) for i, m in enumerate(maps)}
        save_npz_atomic(self._path(image_id), factors=np.array([m.factor for m in maps]),
                        sizes=np.array([m.image_size for m in maps]), digest=np.array(image_digest),
                        **arrays)

    def size_bytes(self) -> int:
        return dir_size_bytes(self.dir, "*.npz")
