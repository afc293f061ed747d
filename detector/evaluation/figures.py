"""Saving matplotlib figures, for the report writers.

Figures are built with ``matplotlib.figure.Figure`` and drawn by the Agg
canvas directly: no pyplot global state, no display backend.
"""
from __future__ import annotations

from pathlib import Path

from detector.fileio import atomic_path

PLOT_DPI = 80  # small PNGs: the reports embed them


def save_figure(fig, path: Path) -> None:
    """Write ``fig`` as a PNG to ``path`` atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=PLOT_DPI)
