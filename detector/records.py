"""Typed records that flow between stages.

Boxes are float32 numpy arrays [N, 4] in the convention of ``detector.boxes``
(x1, y1, x2, y2, continuous 0-based pixels). Numpy rather than torch so records
pickle-free serialise and cross process boundaries cheaply; stages convert
with ``detector.boxes.as_box_tensor`` where they compute.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np


def class_label(k: int, class_names: Sequence[str] | None = None) -> str:
    """How messages name class ``k``: ``class 'circle' (0)``, or ``class 0`` without names
    (a name alone is ambiguous in a stage's statistics, an index alone unreadable)."""
    return f"class {class_names[k]!r} ({k})" if class_names is not None else f"class {k}"


def _empty_boxes() -> np.ndarray:
    return np.zeros((0, 4), dtype=np.float32)


@dataclass(frozen=True)
class ImageRecord:
    """One annotated image.

    labels index into the dataset's ``class_names``; ``difficult`` marks VOC
    difficult objects, which evaluation ignores rather than counts.
    """

    image_id: str
    path: Path
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=_empty_boxes)  # float32 [N, 4]
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # int64 [N]
    difficult: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # bool [N]

    def __post_init__(self):
        n = len(self.boxes)
        if self.boxes.shape != (n, 4) or len(self.labels) != n or len(self.difficult) != n:
            raise ValueError(f"{self.image_id}: boxes {self.boxes.shape}, labels "
                             f"{self.labels.shape} and difficult {self.difficult.shape} disagree")


@dataclass(frozen=True)
class Detections:
    """Detections of one image: boxes float32 [N, 4], scores float32 [N], labels int64 [N]."""

    boxes: np.ndarray = field(default_factory=_empty_boxes)
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.scores)

    def __post_init__(self):
        n = len(self.scores)
        if self.boxes.shape != (n, 4) or len(self.labels) != n:
            raise ValueError(f"Detections: boxes {self.boxes.shape}, scores {self.scores.shape} "
                             f"and labels {self.labels.shape} disagree")
