"""Conv fine-tuning's frozen prefix: run once per image and scale, then only the learning blocks.

Conv fine-tuning (``finetune.conv_layers``) trains the trunk's last blocks; the
blocks before them never change, yet a full trunk pass per image and
iteration runs them again. :class:`FrozenPrefix` cuts the trunk there
(``Backbone.split``), keeps the prefix's output for every training image and
scale on disk (a :class:`~detector.features.conv_maps.FeatureCache` of its own under
``<cache root>/prefix``, keyed by the prefix's weights, the preprocessing,
scales and max_size; a mirror is its own entry, as in the conv5 cache), and
runs only the suffix with autograd. The maps are stored float32, so
``suffix(cached prefix)`` is the full trunk's map exactly (tested), and the
fine-tuning stage's result and key are those of the uncached route.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from ..features.conv_maps import FeatureCache, FeatureMap, compute_feature_maps, feature_cache_key
from ..progress import progress_of
from ..threads import adapting_threads

# float32: the cached route is then the full trunk's computation bit for bit.
PREFIX_DTYPE = "float32"


class FrozenPrefix:
    """The trunk split before its last ``blocks`` learning blocks, the prefix's maps cached.

    Images are ``detector.features.pool5.ImageSource``s (not imported: that
    module holds this one); an image without a cache key is computed, not cached.
    """

    def __init__(self, backbone, blocks: int, scales: Sequence[int], max_size: int,
                 cache: FeatureCache | None = None):
        self.backbone = backbone
        self.prefix, self.suffix = backbone.split(blocks)
        self.scales = list(scales)
        self.max_size = max_size
        self.cache = cache

    @classmethod
    def cached(cls, backbone, blocks: int, scales: Sequence[int], max_size: int,
               root: str | Path) -> "FrozenPrefix":
        """A prefix whose maps are kept under ``root/prefix``."""
        key = feature_cache_key(backbone.name, backbone.prefix_digest(blocks), str(backbone.preprocess),
                                scales, max_size, PREFIX_DTYPE)
        return cls(backbone, blocks, scales, max_size, FeatureCache(Path(root) / "prefix", key, PREFIX_DTYPE))

    def maps(self, image) -> list[FeatureMap]:
        """The prefix's output for ``image``, one map per scale, from the cache where possible."""
        cacheable = self.cache is not None and image.cacheable
        maps = self.cache.load(image.key, image.digest()) if cacheable else None
        if maps is None:
            maps = compute_feature_maps(self.backbone, image.pixels(), self.scales, self.max_size, image.name,
                                        layers=self.prefix)
            if cacheable:
                self.cache.save(image.key, maps, image.digest())
        return maps

    def prepare(self, images: Sequence, progress: bool = True) -> None:
        """Fill the cache for ``images`` before the first iteration."""
        if self.cache is None:
            return
        todo = [im for im in images if im.cacheable and not self.cache.is_current(im.key, im.digest())]
        for im in adapting_threads(progress_of(todo, desc="frozen prefix cache", unit="img",
                                               enabled=progress and bool(todo))):
            self.maps(im)
            im._pixels = None  # the iterations read the cache; keep memory flat

    def trainable_map(self, image, scale: int) -> FeatureMap:
        """conv5 of ``image`` at training ``scale`` (one of the scales): the suffix run with
        autograd on the cached prefix output."""
        return self._suffix_map(self.maps(image)[self.scales.index(scale)])

    @torch.no_grad()
    def conv5_maps(self, image) -> list[FeatureMap]:
        """conv5 of ``image`` at every scale with the trunk as it is now: the suffix on the
        cached prefix output, the full trunk's maps exactly while the prefix is unchanged
        (the prefix's cache is keyed by its weights)."""
        return [self._suffix_map(m) for m in self.maps(image)]

    def _suffix_map(self, m: FeatureMap) -> FeatureMap:
        # The layout of the full trunk's pass (network_input is channels-last) keeps the
        # suffix's kernels, hence its values, those of the uncached route.
        x = m.features[None].to(self.backbone.device).contiguous(memory_format=torch.channels_last)
        return FeatureMap(self.suffix(x)[0].float().cpu(), m.factor, m.image_size)

    def cache_bytes(self) -> int:
        return 0 if self.cache is None else self.cache.size_bytes()
