"""Writing PASCAL VOC annotation XML: the inverse of :mod:`detector.data.voc`.

One ``<annotation>`` per image with ``<filename>``, ``<size>`` and one
``<object>`` (``<name>``, ``<difficult>``, ``<bndbox>``) per box: the layout of
the VOC devkit, which LabelImg and CVAT import too. Coordinates are written
as VOC's 1-based inclusive integer pixels; :func:`voc_objects` converts the
project's 0-based continuous boxes at this edge.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence
from xml.sax.saxutils import escape

import numpy as np


@dataclass(frozen=True)
class VOCObject:
    """One object as VOC stores it: 1-based inclusive integer pixel bounds."""

    name: str
    xmin: int
    ymin: int
    xmax: int
    ymax: int
    difficult: bool = False


def voc_objects(boxes: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                width: int, height: int) -> list[VOCObject]:
    """0-based continuous boxes [N, 4] -> VOC objects inside a ``width`` x ``height`` image.

    The VOC loader reads (xmin, xmax) as the edges (xmin - 1, xmax), so the
    edges are rounded to whole pixels and written as (x1 + 1, x2); every box
    keeps at least one pixel.
    """
    out = []
    for (x1, y1, x2, y2), label in zip(np.asarray(boxes, np.float64).reshape(-1, 4), labels):
        xmin = int(np.clip(round(x1), 0, width - 1)) + 1
        ymin = int(np.clip(round(y1), 0, height - 1)) + 1
        xmax = int(np.clip(round(x2), xmin, width))
        ymax = int(np.clip(round(y2), ymin, height))
        out.append(VOCObject(class_names[int(label)], xmin, ymin, xmax, ymax))
    return out


def format_voc_xml(filename: str, width: int, height: int, objects: Sequence[VOCObject],
                   folder: str = "JPEGImages", depth: int = 3) -> str:
    """The annotation XML of one image."""
    parts = ["<annotation>", f"  <folder>{escape(folder)}</folder>",
             f"  <filename>{escape(filename)}</filename>",
             f"  <size><width>{width}</width><height>{height}</height><depth>{depth}</depth></size>",
             "  <segmented>0</segmented>"]
    for o in objects:
        parts += ["  <object>", f"    <name>{escape(o.name)}</name>", "    <pose>Unspecified</pose>",
                  "    <truncated>0</truncated>", f"    <difficult>{int(o.difficult)}</difficult>",
                  f"    <bndbox><xmin>{o.xmin}</xmin><ymin>{o.ymin}</ymin>"
                  f"<xmax>{o.xmax}</xmax><ymax>{o.ymax}</ymax></bndbox>",
                  "  </object>"]
    parts.append("</annotation>")
    return "\n".join(parts) + "\n"
