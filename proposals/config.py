"""Parameters of the proposal stage (one typed record, loaded by detector.configio)."""
from __future__ import annotations

from dataclasses import dataclass

METHODS = ("opencv_fast", "opencv_quality", "opencv_single", "selectivesearch", "precomputed")


@dataclass
class ProposalConfig:
    # Selective search "fast mode" is what SPP-net and R-CNN scored (~2000 windows).
    method: str = "opencv_fast"
    # SPP-net/R-CNN used about 2000 windows per image.
    max_windows: int = 2000
    # R-CNN drops windows with a side under 20 px: too small to classify.
    min_size: float = 20.0
    # Longer image side is downscaled to this before the search (0 = never);
    # search time grows with pixels, and 500 px keeps ~2 s/image on one core.
    max_side: int = 500
    # Upscale factor applied before the search (>1 helps small dense objects).
    upscale: float = 1.0
    # Worker processes for a dataset split (0 = all cores).
    workers: int = 0
    # Path of precomputed boxes (.mat from R-CNN/fast-rcnn, or .npz/.json), method "precomputed".
    path: str = ""

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"proposals.method {self.method!r} is not one of {', '.join(METHODS)}")
        if self.max_windows <= 0:
            raise ValueError("proposals.max_windows must be positive")
        if self.method == "precomputed" and not self.path:
            raise ValueError("proposals.method precomputed needs proposals.path")
