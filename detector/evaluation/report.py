"""Evaluation report: metrics.json, report.md, report.html and precision/recall plots.

Works on a :class:`~detector.evaluation.voc_ap.VOCResult` or a
:class:`~detector.evaluation.coco_eval.COCOResult` (both have ``metric``,
``class_names``, ``mAP``, per-class ``ap``/``n_gt``/``n_det``/``precision``/
``recall`` and ``summary()``). Every file is written atomically. A class
without ground truth (AP NaN) is written as ``null`` in JSON and "n/a" in
tables. Plots use matplotlib's Figure with the Agg canvas directly, so no
global pyplot state or display backend is involved.
"""
from __future__ import annotations

import dataclasses
import math
import os
import platform
import re
import sys
from pathlib import Path
from typing import Mapping

import numpy as np

from detector.evaluation.analysis_plots import plot_analysis
from detector.evaluation.analysis_report import format_analysis_markdown
from detector.evaluation.figures import save_figure
from detector.evaluation.html_report import write_html_report
from detector.fileio import write_json_atomic, write_text_atomic

METRIC_NAMES = {
    "voc07": "PASCAL VOC 2007 11-point interpolated AP",
    "voc12": "PASCAL VOC 2010+ AP (area under the interpolated precision/recall curve)",
    "coco": "COCO AP averaged over IoU 0.5:0.05:0.95 (pycocotools)",
}
PR_FOLDER = "pr_curves"  # one PNG per class under out_dir
SUMMARY_PLOT = "pr_curves.png"  # all classes in one plot


@dataclasses.dataclass(frozen=True)
class ReportFiles:
    """Paths written by :func:`write_report`."""

    metrics: Path  # metrics.json
    report: Path  # report.md
    plots: tuple[Path, ...]  # per-class PR PNGs, the all-classes plot, then the analysis plots
    html: Path | None = None  # report.html


def _json_float(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def _jsonable(obj):
    """Config/timings/extra -> JSON types (dataclasses, paths, numpy scalars, tuples)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float):
        return _json_float(obj)
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    return str(obj)  # Path and anything else: its text


def collect_versions() -> dict[str, str]:
    """Versions of python, torch, torchvision, numpy and the platform."""
    import torch
    import torchvision
    return {"python": sys.version.split()[0], "torch": torch.__version__,
            "torchvision": torchvision.__version__, "numpy": np.__version__,
            "platform": platform.platform()}


def metrics_dict(result) -> dict:
    """The metrics of ``result`` as JSON types (NaN -> None)."""
    out = {"metric": result.metric, "metric_description": METRIC_NAMES[result.metric],
           "mAP": _json_float(result.mAP),
           "AP": {c: _json_float(result.ap[c]) for c in result.class_names},
           "n_gt": dict(result.n_gt), "n_det": dict(result.n_det)}
    if hasattr(result, "iou_threshold"):
        out["iou_threshold"] = result.iou_threshold
    out["summary"] = {k: _json_float(v) for k, v in result.summary().items()}
    return out


def _fmt_ap(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.1f}"


def class_ap_rows(result) -> list[tuple[str, str, str, str]]:
    """(class, AP %, #gt, #det) per class, then the mean row."""
    rows = [(c, _fmt_ap(result.ap[c]), str(result.n_gt[c]), str(result.n_det[c]))
            for c in result.class_names]
    rows.append(("mean" if result.metric != "coco" else "mean (AP)", _fmt_ap(result.mAP),
                 str(sum(result.n_gt.values())), str(sum(result.n_det.values()))))
    return rows


def format_report_table(result) -> str:
    """Per-class AP (in %), #gt, #det and the mean, as aligned plain text."""
    header = ("class", "AP", "#gt", "#det")
    rows = class_ap_rows(result)
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(4)]
    line = lambda r: "  ".join([r[0].ljust(widths[0])] + [v.rjust(w) for v, w in zip(r[1:], widths[1:])])
    lines = [f"metric: {METRIC_NAMES[result.metric]}", line(header), "-" * (sum(widths) + 6)]
    lines += [line(r) for r in rows[:-1]] + ["-" * (sum(widths) + 6), line(rows[-1])]
    if result.metric == "coco":
        lines.append("  ".join(f"{k} {_fmt_ap(v)}" for k, v in result.summary().items()))
    return "\n".join(lines)


def format_report_markdown(result) -> str:
    """report.md: metric, summary, per-class table (AP in %)."""
    lines = ["# Detection evaluation", "", f"Metric: **{METRIC_NAMES[result.metric]}** "
             f"(`{result.metric}`)" + (f", IoU threshold {result.iou_threshold:g}"
                                       if hasattr(result, "iou_threshold") else "") + ".", ""]
    lines += [f"- {k}: {_fmt_ap(v)}" for k, v in result.summary().items()]
    lines += ["", "AP in %; #gt counts non-difficult objects; a class without ground truth "
              "shows n/a and is left out of the mean.", "",
              "| class | AP | #gt | #det |", "|---|---:|---:|---:|"]
    rows = class_ap_rows(result)
    lines += [f"| {c} | {ap} | {g} | {d} |" for c, ap, g, d in rows[:-1]]
    c, ap, g, d = rows[-1]
    lines += [f"| **{c}** | **{ap}** | {g} | {d} |", ""]
    return "\n".join(lines)


def safe_filename(name: str) -> str:
    """A class name as a file name: anything but letters, digits, '-', '_' becomes '_'."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", name) or "_"


def plot_pr_curves(out_dir: str | os.PathLike, result) -> list[Path]:
    """One precision/recall PNG per class plus an all-classes plot; returns their paths."""
    from matplotlib.figure import Figure
    out_dir = Path(out_dir)
    paths = []
    summary = Figure(figsize=(8, 6))
    ax_all = summary.add_subplot()
    for c in result.class_names:
        rec, prec = result.recall[c], result.precision[c]
        fig = Figure(figsize=(4, 4))
        ax = fig.add_subplot()
        ax.plot(rec, prec, drawstyle="steps-post")
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision",
               title=f"{c}: AP {_fmt_ap(result.ap[c])} ({result.metric})")
        ax.grid(alpha=0.3)
        path = out_dir / PR_FOLDER / f"{safe_filename(c)}.png"
        save_figure(fig, path)
        paths.append(path)
        if len(rec):
            ax_all.plot(rec, prec, drawstyle="steps-post", linewidth=1,
                        label=f"{c} ({_fmt_ap(result.ap[c])})")
    ax_all.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision",
               title=f"all classes: mean AP {_fmt_ap(result.mAP)} ({result.metric})")
    ax_all.grid(alpha=0.3)
    if ax_all.lines:
        ax_all.legend(fontsize=6, ncol=2, loc="lower left")
    save_figure(summary, out_dir / SUMMARY_PLOT)
    paths.append(out_dir / SUMMARY_PLOT)
    return paths


def write_report(out_dir: str | os.PathLike, result, config=None, timings: Mapping | None = None,
                 extra: Mapping | None = None, analysis=None) -> ReportFiles:
    """Write metrics.json, report.md, report.html and the plots into ``out_dir``.

    Args:
        result: VOCResult or COCOResult.
        config: anything JSON-able or a dataclass; stored under "config".
        timings: e.g. {"evaluate_s": 1.2}; stored under "timings".
        extra: more keys for metrics.json (must not clash with the metric keys).
        analysis: an optional :class:`~detector.evaluation.analysis.Analysis`:
            stored under "analysis", with its sections and plots in both reports.
    Returns:
        ReportFiles with the paths written.
    """
    out_dir = Path(out_dir)
    metrics = metrics_dict(result)
    metrics["versions"] = collect_versions()
    if config is not None:
        metrics["config"] = _jsonable(config)
    if timings is not None:
        metrics["timings"] = _jsonable(timings)
    for k, v in (extra or {}).items():
        if k in metrics:
            raise ValueError(f"extra key {k!r} clashes with a metrics.json key")
        metrics[k] = _jsonable(v)
    plots = plot_pr_curves(out_dir, result)
    markdown = format_report_markdown(result)
    figures = {"pr": out_dir / SUMMARY_PLOT}
    if analysis is not None:  # detector/evaluation/analysis.py
        metrics["analysis"] = _jsonable(analysis.to_dict())
        extra_plots = plot_analysis(out_dir, analysis)
        plots += extra_plots
        figures.update(zip(("f1", "confusion", "errors"), extra_plots))
        markdown += "\n" + format_analysis_markdown(analysis, {k: p.name for k, p in figures.items()})
    write_json_atomic(out_dir / "metrics.json", metrics)
    write_text_atomic(out_dir / "report.md", markdown)
    html = write_html_report(out_dir, metrics, (("class", "AP", "#gt", "#det"), class_ap_rows(result)),
                             figures, analysis)
    return ReportFiles(out_dir / "metrics.json", out_dir / "report.md", tuple(plots), html)
