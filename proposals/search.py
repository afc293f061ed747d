"""Selective search backends and :func:`propose`, the one entry point per image.

Box order (what "ranked" means here):

- OpenCV (``opencv_fast``, ``opencv_quality``, ``opencv_single``): OpenCV's
  ``SelectiveSearchSegmentation.process`` gives every region of every
  hierarchy (colour space x k x strategy) the rank ``rand() * level``, where
  level is 1 for an initial segment and grows by one per merge, and sorts by
  increasing rank: a pseudo-random interleaving of the hierarchies with small,
  early regions first (Uijlings et al. 2013 rank the same way but with the
  levels reversed, large regions first; OpenCV's comment says it inverted it
  on purpose). We keep that order. Its ``rand()`` is the C library's, never
  seeded by OpenCV, so the order depended on what the process had done before;
  we seed it with ``ProposalConfig.seed`` right before each search, which
  makes the boxes AND their order a function of the image and the parameters.
- ``selectivesearch`` package: its order, the initial segments first, then the
  merged regions in the order the grouping created them.
- ``precomputed``: the file's order.

Then :func:`proposals.windows.finalize_windows`: clip, drop windows under
``min_size``, drop duplicates keeping the first, keep the first ``max_windows``.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import warnings

import cv2
import numpy as np

from .config import ProposalConfig, ProposalError
from .dense import dense_windows
from .windows import finalize_windows, xywh_to_xyxy_array


def _load_libc():
    # On Windows there is no "c" library to find (CDLL(None) raises TypeError);
    # seeding then is unavailable and seed_c_rand says so.
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None)
    except (OSError, TypeError):
        return None


_LIBC = _load_libc()


def seed_c_rand(seed: int) -> bool:
    """Seed the C library's ``rand()``, which OpenCV's selective search ranks with.

    Returns False (and warns once) where the C library cannot be reached, in
    which case OpenCV's order is not reproducible across processes.
    """
    if _LIBC is None or not hasattr(_LIBC, "srand"):
        warnings.warn("cannot seed the C rand(): OpenCV's proposal order will not be reproducible",
                      RuntimeWarning, stacklevel=2)
        return False
    _LIBC.srand(ctypes.c_uint(seed & 0xFFFFFFFF))
    return True


def search_scale(height: int, width: int, max_side: int, upscale: float) -> float:
    """Factor the image is resized by before the search.

    ``upscale`` first; then, if ``max_side`` > 0 and the longer side would
    exceed it, the factor that brings the longer side to ``max_side``.
    """
    scale = float(upscale)
    longer = max(height, width)
    if max_side > 0 and longer * scale > max_side:
        scale = max_side / longer
    return scale


def resize_for_search(image: np.ndarray, scale: float) -> np.ndarray:
    """Resize ``image`` [H, W, 3] by ``scale`` (area averaging down, bilinear up)."""
    if scale == 1.0:
        return image
    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interp)


def search_opencv(image: np.ndarray, mode: str, base_k: int, inc_k: int, sigma: float,
                  seed: int) -> np.ndarray:
    """OpenCV ximgproc selective search on RGB uint8 [H, W, 3].

    mode: "fast" (HSV+Lab, k = base_k + {0,1,2}*inc_k, 2 strategies), "quality"
    (5 colour spaces, 5 k values, 4 strategies) or "single" (HSV, k = base_k,
    colour+texture+size+fill). Returns float32 (x1, y1, x2, y2) [N, 4] in rank order.
    """
    ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    ss.setBaseImage(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))  # OpenCV converts from BGR
    if mode == "fast":
        ss.switchToSelectiveSearchFast(int(base_k), int(inc_k), float(sigma))
    elif mode == "quality":
        ss.switchToSelectiveSearchQuality(int(base_k), int(inc_k), float(sigma))
    elif mode == "single":
        ss.switchToSingleStrategy(int(base_k), float(sigma))
    else:
        raise ValueError(f"unknown OpenCV selective search mode {mode!r}")
    seed_c_rand(seed)
    rects = ss.process()
    return xywh_to_xyxy_array(rects if len(rects) else np.zeros((0, 4)))


def search_selectivesearch(image: np.ndarray, scale: float, sigma: float,
                           min_size: int) -> np.ndarray:
    """The ``selectivesearch`` package (AlpacaDB) on RGB uint8 [H, W, 3].

    Returns float32 (x1, y1, x2, y2) [N, 4] in the package's order.
    """
    import selectivesearch  # imported here: it pulls in scikit-image, slow to import

    with warnings.catch_warnings():
        # The package feeds float images to skimage's local_binary_pattern, which
        # warns on every call; the warning is about the package, not the caller.
        warnings.filterwarnings("ignore", message=".*local_binary_pattern.*", category=UserWarning)
        _, regions = selectivesearch.selective_search(image, scale=scale, sigma=sigma,
                                                      min_size=min_size)
    if not regions:
        return np.zeros((0, 4), np.float32)
    # The package's rect is (min_x, min_y, max_x - min_x, max_y - min_y) with
    # max_x the last pixel INCLUDED, so the continuous right edge is max_x + 1.
    r = np.array([reg["rect"] for reg in regions], dtype=np.float32)
    return np.concatenate([r[:, :2], r[:, :2] + r[:, 2:] + 1.0], axis=1)


def check_image(image: np.ndarray) -> np.ndarray:
    """Validate an RGB uint8 [H, W, 3] array; raise ProposalError otherwise."""
    if not isinstance(image, np.ndarray):
        raise ProposalError(f"image must be a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ProposalError(f"image must be RGB [H, W, 3], got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ProposalError(f"image must be uint8, got {image.dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ProposalError(f"image is empty, shape {image.shape}")
    return np.ascontiguousarray(image)


def propose_precomputed(image_id: str, width: int, height: int,
                        cfg: ProposalConfig) -> np.ndarray:
    """Windows of ``image_id`` from the file ``cfg.path``, finalized for a width x height image.

    Needs no pixels, only the size, so a split of precomputed boxes is cheap.
    """
    from .precomputed import load_precomputed  # imported here: scipy is slow to import

    table = load_precomputed(cfg.path)
    if image_id not in table:
        raise ProposalError(f"{cfg.path}: no proposals for image {image_id!r} "
                            f"({len(table)} images in the file)")
    return finalize_windows(table[image_id], width, height, cfg.min_size, cfg.max_windows)


def propose_with_config(image: np.ndarray, cfg: ProposalConfig,
                        image_id: str | None = None) -> np.ndarray:
    """Proposal windows of one image.

    Args:
        image: RGB uint8 [H, W, 3].
        cfg: the proposal parameters (see ``proposals.config``).
        image_id: needed only by method "precomputed" (the key into the file).
    Returns:
        float32 [N, 4] (x1, y1, x2, y2), 0-based continuous pixels of ``image``,
        ranked (module docstring), N <= cfg.max_windows.
    """
    cfg.validate()
    image = check_image(image)
    h, w = image.shape[:2]
    if cfg.method == "precomputed":
        if image_id is None:
            raise ProposalError("method 'precomputed' needs the image_id to look up "
                                f"in {cfg.path}")
        return propose_precomputed(image_id, w, h, cfg)
    if cfg.method == "dense":
        return finalize_windows(dense_grid(image, cfg, cfg.max_windows), w, h, cfg.min_size, cfg.max_windows)
    method = "opencv_fast" if cfg.method == "union" else cfg.method
    scale = search_scale(h, w, cfg.max_side, cfg.upscale)
    small = resize_for_search(image, scale)
    if method == "selectivesearch":
        raw = search_selectivesearch(small, cfg.base_k, cfg.sigma, cfg.segment_min_size)
    else:
        mode = method.removeprefix("opencv_")
        raw = search_opencv(small, mode, cfg.base_k, cfg.inc_k, cfg.sigma, cfg.seed)
    # Map back to the original image: the resized image spans the same extent,
    # so continuous coordinates scale by the per-axis size ratio.
    sh, sw = small.shape[:2]
    raw = raw * np.array([w / sw, h / sh, w / sw, h / sh], dtype=np.float32)
    windows = finalize_windows(raw, w, h, cfg.min_size, cfg.max_windows)
    if cfg.method == "union":  # the search's windows first, the grid fills what the cap leaves
        grid = dense_grid(image, cfg, cfg.max_windows - len(windows))
        windows = finalize_windows(np.concatenate([windows, grid]), w, h, cfg.min_size, cfg.max_windows)
    return windows


def dense_grid(image: np.ndarray, cfg: ProposalConfig, budget: int) -> np.ndarray:
    """The ranked dense grid (``proposals.dense``) of ``image`` under ``cfg``, at most ``budget`` windows."""
    return dense_windows(image, min_size=cfg.min_size, max_windows=budget,
                         scales_per_octave=cfg.dense_scales_per_octave, aspects=cfg.dense_aspects,
                         stride=cfg.dense_stride)


def propose(image: np.ndarray, method: str = "opencv_fast", max_windows: int = 2000,
            min_size: float = 20.0, max_side: int | None = None, image_id: str | None = None,
            **params) -> np.ndarray:
    """Proposal windows of one image with keyword parameters.

    Args:
        image: RGB uint8 [H, W, 3].
        method: one of ``proposals.config.METHODS``.
        max_windows: cap on the number of windows (first in rank order).
        min_size: smallest window side in pixels of ``image``.
        max_side: longer side before the search; None takes ProposalConfig's default.
        image_id: key for method "precomputed".
        **params: any other ProposalConfig field (base_k, inc_k, sigma, upscale,
            seed, segment_min_size, path).
    Returns:
        float32 [N, 4] (x1, y1, x2, y2), see :func:`propose_with_config`.
    """
    fields = dict(method=method, max_windows=max_windows, min_size=min_size, **params)
    if max_side is not None:
        fields["max_side"] = max_side
    try:
        cfg = ProposalConfig(**fields)
    except TypeError as e:
        raise ProposalError(f"propose(): {e}") from None
    return propose_with_config(image, cfg, image_id=image_id)
