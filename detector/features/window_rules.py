"""How a window in the original image reaches a scale's conv5 cells: the rules, as one record.

Three choices sit between a window and its pooled vector (docs/method.md
lists each with the official file:line): which scale pools it
(``scale_rule`` with the target side ``canonical_window``,
:func:`detector.features.pyramid.select_scales`), how its coordinates follow the
image into that scale (``scaling``, :func:`detector.features.mapping.scale_windows`) and which cells
it keeps there (``margin``, :func:`detector.features.pyramid.map_windows_to_features`).
"""
from __future__ import annotations

from dataclasses import dataclass

from .mapping import CANONICAL_WINDOW, DEFAULT_WINDOW_MARGIN


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
