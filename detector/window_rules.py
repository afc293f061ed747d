"""How a window in the original image reaches a scale's conv5 cells: the rules, as one record.

Three choices sit between a window and its pooled vector (docs/method.md
lists each with the official file:line): which scale pools it
(``scale_rule`` with the target side ``canonical_window``,
:func:`detector.pooling.select_scales`), how its coordinates follow the
image into that scale (``scaling``, :func:`scale_windows`) and which cells
it keeps there (``margin``, :func:`detector.pooling.map_windows_to_features`).
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from .pooling import CANONICAL_WINDOW, DEFAULT_WINDOW_MARGIN


@dataclass(frozen=True)
class WindowRules:
    """The window -> cells rules of one detector (config: features.scale_rule,
    pool.canonical_window, pool.window_margin, pool.window_scaling)."""

    canonical_window: int = CANONICAL_WINDOW
    margin: float = DEFAULT_WINDOW_MARGIN
    scale_rule: str = "area"
    scaling: str = "plain"

    @property
    def needs_min_side(self) -> bool:
        """Whether the rules read the original image's shorter side."""
        return self.scale_rule == "side" or self.scaling == "corner"


def scale_windows(windows: Tensor, factor: float, scaling: str, min_side: int | None = None) -> Tensor:
    """Windows [N, 4] of the original image in the image resized by ``factor``.

    Both are in 0-based continuous pixel coordinates (pixel i covers [i, i + 1)).
    "plain" multiplies by ``factor``. "corner" is the official
    ``spp_features_convX_to_poolX.m:45``, ``(b - 1) * (s - 1) / (m - 1) + 1``
    on 1-based pixel indices b, with s = factor * m the scaled shorter side
    and m = ``min_side`` the original one: it maps pixel centres so that the
    first and last pixels' centres stay on the first and last pixels'
    centres, with rho = (s - 1) / (m - 1). Its box is the inclusive range of
    pixel indices [l, r], i.e. our [X1, X2) = [l - 1, r): the left pixel's
    index l -> (l - 1) * rho + 1 makes X1' = X1 * rho, and the right pixel's
    r -> (r - 1) * rho + 1 makes X2' = (X2 - 1) * rho + 1. Each edge keeps
    half a pixel around its corner pixel's moved centre; "plain" moves the
    edges themselves. The two differ by at most factor - 1 px, at a left edge
    on the last pixel or a right edge on the first (2.2 px for VOC's 375 px
    shorter side at scale 1200).
    """
    if scaling == "plain":
        return windows * factor
    if scaling != "corner":
        raise ValueError(f"scale_windows: scaling {scaling!r} must be plain or corner")
    if min_side is None:
        raise ValueError("scale_windows: corner scaling needs the image's shorter side")
    if min_side <= 1:  # one pixel: no two centres to align
        return windows * factor
    rho = (factor * min_side - 1.0) / (min_side - 1.0)
    out = windows * rho
    out[:, 2:] = (windows[:, 2:] - 1.0) * rho + 1.0
    return out
