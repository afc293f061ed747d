"""The plots of an :class:`~detector.evaluation.analysis.Analysis`: F1 curves, confusion
matrix heat map, error breakdown. PNGs written beside report.md."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from detector.evaluation.errors import FP_KINDS
from detector.evaluation.figures import save_figure
from detector.evaluation.thresholds import ALL_CLASSES

F1_PLOT = "f1_curves.png"
CONFUSION_PLOT = "confusion_matrix.png"
ERRORS_PLOT = "errors.png"
KIND_COLOURS = {"localisation": "tab:orange", "duplicate": "tab:purple", "confusion": "tab:red",
                "background": "tab:gray", "missed": "tab:blue"}


def plot_f1_curves(path: Path, analysis) -> Path:
    """F1 against score threshold, one line per class and the pooled one in black."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(8, 5))
    ax = fig.add_subplot()
    for name, curve in analysis.f1.items():
        if not len(curve.f1):
            continue
        pooled = name == ALL_CLASSES
        best = "" if np.isnan(curve.best_threshold) else f" (best {curve.best_f1:.2f} at {curve.best_threshold:.3g})"
        ax.plot(curve.thresholds, curve.f1, color="black" if pooled else None,
                linewidth=2 if pooled else 1, label=f"{name}{best}")
    ax.axvline(analysis.score_threshold, color="gray", linestyle="--", linewidth=1,
               label=f"operating point {analysis.score_threshold:.3g}")
    ax.set(xlabel="score threshold (keep score >= t)", ylabel="F1", ylim=(0, 1.02),
           title="F1 against score threshold")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2, loc="best")
    save_figure(fig, path)
    return path


def plot_confusion_matrix(path: Path, confusion) -> Path:
    """Heat map of the counts, normalised per row for the colour, counts written in the cells."""
    from matplotlib.figure import Figure
    labels = confusion.labels
    n = len(labels)
    counts = confusion.matrix
    rows = counts.sum(axis=1, keepdims=True)
    shade = np.where(rows > 0, counts / np.maximum(rows, 1), 0.0)
    side = min(3 + 0.5 * n, 14)
    fig = Figure(figsize=(side + 1, side))
    ax = fig.add_subplot()
    image = ax.imshow(shade, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of the row")
    ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(n), labels, fontsize=7)
    ax.set(xlabel="predicted", ylabel="true",
           title=f"score >= {confusion.score_threshold:.3g}, IoU >= {confusion.iou_threshold:g}")
    if n <= 30:  # past that the numbers do not fit
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=6,
                            color="white" if shade[i, j] > 0.5 else "black")
    fig.tight_layout()
    save_figure(fig, path)
    return path


def plot_errors(path: Path, errors) -> Path:
    """Left: mAP gained by fixing each kind. Right: false positives met before each recall."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(10, 4))
    left, right = fig.subplots(1, 2)
    kinds = list(FP_KINDS) + ["missed"]
    gains = [100 * errors.map_gain[k] for k in kinds]
    left.barh(kinds, gains, color=[KIND_COLOURS[k] for k in kinds])
    left.invert_yaxis()
    left.set(xlabel="mAP points gained if fixed", title=f"mAP {100 * errors.mAP:.1f}: what each error costs")
    left.grid(alpha=0.3, axis="x")
    recalls = np.asarray(errors.walk_recalls)
    right.stackplot(recalls, [errors.walk[k] for k in FP_KINDS], labels=list(FP_KINDS),
                    colors=[KIND_COLOURS[k] for k in FP_KINDS], alpha=0.8)
    right.set(xlabel="recall reached (per class)", ylabel="false positives ranked before it",
              title="false positives along the PR walk", xlim=(recalls[0], recalls[-1]))
    right.legend(fontsize=7, loc="upper left")
    right.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
    return path


def plot_analysis(out_dir: str | os.PathLike, analysis) -> list[Path]:
    """The three analysis plots in ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    return [plot_f1_curves(out_dir / F1_PLOT, analysis),
            plot_confusion_matrix(out_dir / CONFUSION_PLOT, analysis.confusion),
            plot_errors(out_dir / ERRORS_PLOT, analysis.errors)]
