"""The one seam between images and the classifiers: pool5 vectors of windows in an image.

SPP-net and R-CNN differ only in where a window's fixed-length vector comes
from. :class:`WindowFeatures` is that one question, "pool5 of these windows
in this image", with two answers:

- :class:`SPPFeatures` (this paper): conv5 maps once per image and scale
  (optionally cached on disk), scale selection per window, window mapping,
  spatial pyramid pooling;
- :class:`detector.features.rcnn_crops.CropFeatures` (R-CNN mode): every window warped and
  convolved on its own (optionally with R-CNN's per-window cache).

``Detector`` and training each hold one and never ask which. ``pool5``
answers under ``torch.inference_mode``: its vectors carry no gradient to the
conv layers, which is the paper's frozen trunk. Conv fine-tuning (past the
paper) asks ``trainable_pool5`` instead: the same conv pass, window mapping
and pyramid, run with autograd at one training scale. Only
:class:`SPPFeatures` has it (R-CNN mode does not fine-tune conv layers).
"""
from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ..boxes import as_box_tensor, box_iou
from .conv_maps import FeatureCache, FeatureMap, compute_feature_maps, feature_cache_key, network_input
from ..fileio import file_digest
from ..training.frozen_prefix import FrozenPrefix
from ..images import ImageReadError, read_image
from .pyramid import FeatureGrid, SpatialPyramidPool, map_windows_to_features, select_scales
from ..progress import progress_of
from ..threads import POOL_THREADS, adapting_threads, limit_threads
from ..timing import timed_stage
from .mapping import scale_windows
from .window_rules import WindowRules


class ImageSource:
    """One image to take window features from: pixels decoded at most once, and,
    when it comes from a file, the id and content digest that key caches."""

    def __init__(self, name: str, path: Path | None = None, key: str | None = None,
                 pixels: np.ndarray | None = None, digest: str | None = None, flip: bool = False,
                 size: tuple[int, int] | None = None):
        self.name = name
        self.path = None if path is None else Path(path)
        self.key = key
        self.flip = flip
        self._pixels = pixels
        self._digest = digest
        self._size = size

    @classmethod
    def from_record(cls, record, digest: str | None = None, flip: bool = False) -> "ImageSource":
        """A dataset image: cacheable under its image id (``digest``: the file's, if known);
        ``flip``: its left-right mirror (the record's id must say so, e.g. ``flipped_record``).
        Its size is the record's (checked against the file by ``data.verify``)."""
        return cls(str(record.path), record.path, record.image_id, digest=digest, flip=flip,
                   size=(record.height, record.width))

    def min_side(self) -> int:
        """The shorter side in pixels (the record's when known: no decoding)."""
        return min(self._size) if self._size is not None else min(self.pixels().shape[:2])

    @classmethod
    def from_pixels(cls, pixels: np.ndarray, name: str = "image") -> "ImageSource":
        """An image already in memory (RGB uint8 [H, W, 3]); never cached."""
        return cls(name, pixels=pixels)

    @property
    def cacheable(self) -> bool:
        return self.key is not None and self.path is not None

    def pixels(self) -> np.ndarray:
        """RGB uint8 [H, W, 3], read from the file on first use."""
        if self._pixels is None:
            pixels = read_image(self.path)
            self._pixels = np.ascontiguousarray(pixels[:, ::-1]) if self.flip else pixels
        return self._pixels

    def digest(self) -> str:
        """Content digest of the image file (keys cache entries)."""
        if self._digest is None:
            self._digest = file_digest(self.path)
        return self._digest


class WindowFeatures(ABC):
    """pool5 vectors [N, pool.output_dim(C)] of windows given in original image pixels."""

    def __init__(self, backbone, pool: SpatialPyramidPool):
        self.backbone = backbone
        self.pool = pool

    @property
    def output_dim(self) -> int:
        return self.pool.output_dim(self.backbone.out_channels)

    @abstractmethod
    def pool5(self, image: ImageSource, windows, timings: dict | None = None,
              scale_rng: np.random.Generator | None = None) -> Tensor:
        """pool5 of ``windows`` [N, 4] in ``image``; seconds go to ``timings`` ("conv", "pool").

        ``scale_rng``: pick each window's scale at random instead of by its
        size (the official fine-tuning at several scales); an extractor with
        one scale, or none, ignores it.
        """

    def trainable_pool5(self, image: ImageSource, windows, scale: int) -> Tensor:
        """pool5 of ``windows`` [N, 4] in ``image`` resized to one training ``scale``
        (shorter side, px), with autograd: the gradient reaches every conv layer that
        learns (conv fine-tuning). Never cached."""
        raise TypeError(f"{type(self).__name__}: no differentiable pool5 (conv fine-tuning is SPP-net's)")

    @abstractmethod
    def with_cache(self, root: str | Path) -> "WindowFeatures":
        """The same extractor, caching what it computes for file images under ``root``."""

    def prepare(self, images: Sequence[ImageSource], progress: bool = True, backend=None) -> None:
        """Fill the cache for ``images`` ahead of use (nothing to do without one); ``backend``:
        a ``detector.ray_backend.RayBackend`` to compute the entries on (None: this process)."""

    def cache_bytes(self) -> int:
        """Disk used by this extractor's cache (0 without one)."""
        return 0


class SPPFeatures(WindowFeatures):
    """SPP-net: conv5 maps once per scale, scale selection, window mapping, pyramid pooling.

    Args:
        backbone: the frozen conv trunk.
        pool: the spatial pyramid.
        scales: shorter-side lengths of the conv passes.
        max_size: cap on the longer side after resizing.
        rules: scale selection, window scaling and mapping (``WindowRules``).
        cache_dtype: dtype of cached maps ("float16" or "float32").
        cache: conv5 maps of file images are kept here when given.
        prefix: conv fine-tuning's frozen prefix (``with_frozen_prefix``): ``trainable_pool5``
            then runs only the learning blocks, on the prefix's cached maps.
    """

    def __init__(self, backbone, pool: SpatialPyramidPool, scales: Sequence[int], max_size: int,
                 rules: WindowRules = WindowRules(), cache_dtype: str = "float16",
                 cache: FeatureCache | None = None):
        super().__init__(backbone, pool)
        self.scales = list(scales)
        self.max_size = max_size
        self.rules = rules
        self.cache_dtype = cache_dtype
        self.cache = cache
        self.prefix: FrozenPrefix | None = None

    def with_frozen_prefix(self, blocks: int, root: str | Path) -> "SPPFeatures":
        """The same extractor, whose ``trainable_pool5`` runs the trunk's last ``blocks`` learning
        blocks on the rest's output cached under ``root`` (the same values, far fewer convs)."""
        twin = copy.copy(self)
        twin.prefix = FrozenPrefix.cached(self.backbone, blocks, self.scales, self.max_size, root)
        return twin

    def with_cache(self, root: str | Path) -> "SPPFeatures":
        key = feature_cache_key(self.backbone.name, self.backbone.digest(), str(self.backbone.preprocess),
                                self.scales, self.max_size, self.cache_dtype)
        return SPPFeatures(self.backbone, self.pool, self.scales, self.max_size, self.rules,
                           self.cache_dtype, FeatureCache(Path(root) / "conv5", key, self.cache_dtype))

    def feature_maps(self, image: ImageSource) -> list[FeatureMap]:
        """The image's conv5 maps, one per scale, from the cache where possible."""
        if self.cache is None or not image.cacheable:
            return compute_feature_maps(self.backbone, image.pixels(), self.scales, self.max_size, image.name)
        maps = self.cache.load(image.key, image.digest())
        if maps is None:
            maps = compute_feature_maps(self.backbone, image.pixels(), self.scales, self.max_size, image.name)
            self.cache.save(image.key, maps, image.digest())
            # Round through the cache's dtype so a first run sees what a resumed run reads.
            maps = [FeatureMap(m.features.to(self.cache.torch_dtype).float(), m.factor, m.image_size)
                    for m in maps]
        return maps

    def prepare(self, images: Sequence[ImageSource], progress: bool = True, backend=None) -> None:
        if self.cache is None:
            return
        todo = [im for im in images if not self.cache.is_current(im.key, im.digest())]
        if backend is not None and todo:
            # Workers get the image bytes and a CPU copy of the trunk; the entries
            # are written here, the same files as below.
            trunk = copy.deepcopy(self.backbone).cpu()
            shared = (trunk, self.scales, self.max_size, self.cache.torch_dtype)
            for i, maps in backend.map(_conv5_shipped, todo, shared, pack=shippable, desc="conv5 cache",
                                       progress=progress):
                self.cache.save(todo[i].key, maps, todo[i].digest())
            return
        for im in adapting_threads(progress_of(todo, desc="conv5 cache", unit="img",
                                               enabled=progress and bool(todo))):
            maps = compute_feature_maps(self.backbone, im.pixels(), self.scales, self.max_size, im.name)
            self.cache.save(im.key, maps, im.digest())
            im._pixels = None  # the decoded image is not needed again; keep memory flat

    def prepare_from_prefix(self, images: Sequence[ImageSource], blocks: int, root: str | Path,
                            progress: bool = True) -> None:
        """:meth:`prepare` for a trunk whose first blocks are those of a frozen prefix cached under
        ``root`` (conv fine-tuning's, ``blocks`` learning blocks): each entry is the last blocks
        run on the prefix's cached maps, the same values as a full pass at a fraction of its
        convs; an image whose prefix maps are not cached runs the prefix first."""
        if self.cache is None:
            return
        prefix = FrozenPrefix.cached(self.backbone, blocks, self.scales, self.max_size, root)
        todo = [im for im in images if not self.cache.is_current(im.key, im.digest())]
        for im in adapting_threads(progress_of(todo, desc="conv5 cache (from the frozen prefix)", unit="img",
                                               enabled=progress and bool(todo))):
            self.cache.save(im.key, prefix.conv5_maps(im), im.digest())
            im._pixels = None

    def pool5(self, image: ImageSource, windows, timings: dict | None = None,
              scale_rng: np.random.Generator | None = None) -> Tensor:
        windows = as_box_tensor(windows)
        with timed_stage(timings, "conv"):
            maps = self.feature_maps(image)
        chosen = None
        if scale_rng is not None and len(maps) > 1:
            chosen = torch.from_numpy(scale_rng.integers(0, len(maps), len(windows)))
        min_side = image.min_side() if self.rules.needs_min_side else None
        with timed_stage(timings, "pool"):
            return pool_windows(maps, windows, self.pool, self.backbone.grid, self.rules, chosen, min_side)

    def trainable_pool5(self, image: ImageSource, windows, scale: int) -> Tensor:
        min_side = image.min_side() if self.rules.needs_min_side else None
        return pool_maps([self.trainable_map(image, scale)], windows, self.pool, self.backbone.grid, self.rules,
                         min_side=min_side)

    @torch.no_grad()
    def current_pool5(self, image: ImageSource, windows) -> Tensor:
        """pool5 with the trunk as it is now (while conv fine-tuning changes it: uncached conv5),
        each window at the scale selection picks, as at test time (held-out windows)."""
        min_side = image.min_side() if self.rules.needs_min_side else None
        return pool_maps([self.trainable_map(image, s) for s in self.scales], windows, self.pool,
                         self.backbone.grid, self.rules, min_side=min_side)

    def trainable_map(self, image: ImageSource, scale: int) -> FeatureMap:
        """conv5 of ``image`` at ``scale`` with autograd: the conv pass of compute_feature_maps,
        uncached, or with a frozen prefix only its learning blocks."""
        if self.prefix is not None:
            return self.prefix.trainable_map(image, scale)
        x, factor = network_input(self.backbone, image.pixels(), scale, self.max_size)
        return FeatureMap(self.backbone(x)[0].float().cpu(), factor, tuple(x.shape[2:]))

    def cache_bytes(self) -> int:
        return 0 if self.cache is None else self.cache.size_bytes()


def shippable(image: ImageSource) -> tuple[str, bytes, bool]:
    """What a worker needs to decode ``image`` without its file: name, file bytes, mirror flag."""
    try:
        data = image.path.read_bytes()
    except OSError as e:
        raise ImageReadError(f"{image.path}: cannot read image file ({e.strerror or e})") from None
    return image.name, data, image.flip


def decode_shipped(name: str, data: bytes, flip: bool) -> ImageSource:
    """The in-memory image a worker decodes from :func:`shippable`'s triple."""
    pixels = read_image(name, data)
    return ImageSource.from_pixels(np.ascontiguousarray(pixels[:, ::-1]) if flip else pixels, name)


def _conv5_shipped(item: tuple[str, bytes, bool], backbone, scales: Sequence[int], max_size: int,
                   dtype: torch.dtype) -> list[FeatureMap]:
    """conv5 maps of one shipped image in the cache's dtype (a Ray task's unit of work)."""
    image = decode_shipped(*item)
    maps = compute_feature_maps(backbone, image.pixels(), scales, max_size, image.name)
    return [FeatureMap(m.features.to(dtype), m.factor, m.image_size) for m in maps]


@torch.inference_mode()
def pool_windows(maps: Sequence[FeatureMap], windows, pool: SpatialPyramidPool, grid: FeatureGrid,
                 rules: WindowRules = WindowRules(), chosen: Tensor | None = None,
                 min_side: int | None = None) -> Tensor:
    """:func:`pool_maps` without autograd (the frozen trunk's pool5, as at test time)."""
    return pool_maps(maps, windows, pool, grid, rules, chosen, min_side)


def pool_maps(maps: Sequence[FeatureMap], windows, pool: SpatialPyramidPool, grid: FeatureGrid,
              rules: WindowRules = WindowRules(), chosen: Tensor | None = None,
              min_side: int | None = None) -> Tensor:
    """Pooled conv5 ("pool5") vectors of windows given in original image coordinates.

    Args:
        maps: the image's conv5 maps, one per scale.
        windows: [N, 4] boxes (x1, y1, x2, y2) in the original image.
        pool: the spatial pyramid pooling layer.
        grid: the backbone's cell grid (``Backbone.grid``: stride, centre offset).
        rules: scale selection (``select_scales``), window scaling
            (``scale_windows``) and the mapping's margin in strides (0.5: the
            cells whose centres lie inside the window; ``map_windows_to_features``).
        chosen: [N] the scale index of each window (default: scale selection).
        min_side: the original image's shorter side, for the rules that read it
            (``WindowRules.needs_min_side``).
    Returns:
        float32 [N, pool.output_dim(C)]; it carries the gradient of maps that require
        one (``SpatialPyramidPool`` pools them with autograd).

    The engine runs with :data:`~detector.threads.POOL_THREADS` (1) torch
    thread, whatever the caller's setting (restored afterwards).
    """
    windows = as_box_tensor(windows)
    channels = maps[0].features.shape[0]
    if len(windows) == 0:
        return torch.zeros(0, pool.output_dim(channels))
    # Every window has a scale, so every row is written below: no zero fill (the page faults of
    # a fresh ~20 MB buffer per image were ~3% of the SVM stage).
    out = torch.empty(len(windows), pool.output_dim(channels))
    if chosen is not None:
        chosen = chosen.long()
        if len(chosen) != len(windows) or int(chosen.min()) < 0 or int(chosen.max()) >= len(maps):
            raise ValueError(f"chosen: one scale index in [0, {len(maps)}) per window ({len(windows)}), "
                             f"got {len(chosen)} in {int(chosen.min())}..{int(chosen.max())}")
    elif len(maps) == 1:
        chosen = torch.zeros(len(windows), dtype=torch.int64)
    else:
        chosen = select_scales(windows, [m.factor for m in maps], rules.canonical_window, rules.scale_rule,
                               min_side)
    for s, fmap in enumerate(maps):
        sel = torch.nonzero(chosen == s).squeeze(1)
        if sel.numel() == 0:
            continue
        _, h, w = fmap.features.shape
        scaled = scale_windows(windows[sel], fmap.factor, rules.scaling, min_side)
        cells = map_windows_to_features(scaled, grid, h, w, rules.margin)
        with limit_threads(POOL_THREADS):
            out[sel] = pool(fmap.features, cells)
    return out


def match_windows(windows: np.ndarray, gt_boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best ground-truth match of each window.

    Returns:
        (max_iou float32 [N], argmax int64 [N]); zeros when there is no gt box.
    """
    n = len(windows)
    if len(gt_boxes) == 0 or n == 0:
        return np.zeros(n, np.float32), np.zeros(n, np.int64)
    iou = box_iou(as_box_tensor(windows), as_box_tensor(gt_boxes))
    best, arg = iou.max(dim=1)
    return best.numpy().astype(np.float32), arg.numpy().astype(np.int64)
