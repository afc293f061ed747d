"""Drawing detections on images (for tools/detect.py and the demo)."""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from ..records import Detections


def class_colour(label: int) -> tuple[int, int, int]:
    """A distinct, stable RGB colour per class (golden-ratio hue steps)."""
    hue = int((label * 0.618033988749895 % 1.0) * 179)
    hsv = np.uint8([[[hue, 200, 255]]])
    r, g, b = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return int(r), int(g), int(b)


def draw_detections(image: np.ndarray, detections: Detections, class_names: Sequence[str],
                    min_score: float = -np.inf) -> np.ndarray:
    """A copy of RGB uint8 ``image`` with each detection's box, class name and score drawn."""
    out = np.ascontiguousarray(image.copy())
    h, w = out.shape[:2]
    thick = max(1, round(min(h, w) / 300))
    font = max(0.4, min(h, w) / 800)
    order = np.argsort(detections.scores)  # draw the best last, on top
    for i in order:
        if detections.scores[i] < min_score:
            continue
        x1, y1, x2, y2 = (int(round(v)) for v in detections.boxes[i])
        label = int(detections.labels[i])
        colour = class_colour(label)
        cv2.rectangle(out, (x1, y1), (x2 - 1, y2 - 1), colour, thick)
        text = f"{class_names[label]} {detections.scores[i]:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font, 1)
        ty = max(th + base, y1)
        cv2.rectangle(out, (x1, ty - th - base), (x1 + tw, ty), colour, -1)
        cv2.putText(out, text, (x1, ty - base), cv2.FONT_HERSHEY_SIMPLEX, font, (0, 0, 0), 1, cv2.LINE_AA)
    return out
