"""Writing a proposal-quality report: markdown, JSON and a recall-vs-windows PNG."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from detector.fileio import atomic_path, write_json_atomic, write_text_atomic

from .recall import RecallReport

REPORT_MD = "proposals_report.md"
REPORT_JSON = "proposals_report.json"
CURVE_PNG = "recall_vs_windows.png"


def format_report(report: RecallReport, title: str, timing: dict, params: dict) -> str:
    """Markdown text of ``report``; ``timing`` as from ``summarize_store`` plus wall clock."""
    lines = [f"# Proposals: {title}", "",
             f"{report.num_images} images, {report.num_gt} ground-truth boxes "
             "(VOC difficult excluded).", "",
             "| windows / image | search s / image (mean) | (median) | recall@0.5 | AR 0.5:0.95 | MABO |",
             "|---|---|---|---|---|---|",
             f"| {report.windows_per_image:.0f} | {timing.get('seconds_per_image_mean', 0):.2f} | "
             f"{timing.get('seconds_per_image_median', 0):.2f} | {report.recall_at(0.5):.3f} | "
             f"{report.average_recall:.3f} | {report.mabo:.3f} |", "",
             "## Recall at IoU", "",
             "| IoU | " + " | ".join(f"{t:.2f}" for t in report.iou_thresholds) + " |",
             "|---" * (len(report.iou_thresholds) + 1) + "|",
             "| recall | " + " | ".join(f"{r:.3f}" for r in report.recall_at_iou) + " |", "",
             "## Recall@0.5 against the number of windows", "",
             "| windows | " + " | ".join(str(n) for n in report.window_counts) + " |",
             "|---" * (len(report.window_counts) + 1) + "|",
             "| recall | " + " | ".join(f"{r:.3f}" for r in report.recall_vs_windows) + " |", "",
             f"![recall vs windows]({CURVE_PNG})", "",
             "## Average best overlap per class", "",
             "| class | ABO |", "|---|---|"]
    lines += [f"| {name} | {abo:.3f} |" for name, abo in report.abo_per_class.items()]
    lines += [f"| **MABO** | {report.mabo:.3f} |", ""]
    if "wall_seconds" in timing:
        lines += [f"Wall clock of this run: {timing['wall_seconds']:.1f} s with "
                  f"{timing.get('workers', '?')} worker(s) (images already cached are not recomputed).", ""]
    if report.missing_images:
        lines += [f"Images without proposals (counted as zero recall): "
                  f"{', '.join(report.missing_images[:20])}"
                  + (" ..." if len(report.missing_images) > 20 else ""), ""]
    lines += ["## Parameters", "", "```", *[f"{k}: {v}" for k, v in params.items()], "```", ""]
    return "\n".join(lines)


def plot_recall_curve(report: RecallReport, path: str | os.PathLike, title: str) -> None:
    """PNG of recall@0.5 against the number of windows (log x axis), written atomically."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    ax.plot(report.window_counts, report.recall_vs_windows, marker="o", ms=3)
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("windows per image")
    ax.set_ylabel("recall @ IoU 0.5")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_report(report: RecallReport, out_dir: str | os.PathLike, title: str,
                 timing: dict, params: dict) -> Path:
    """Write proposals_report.md, proposals_report.json and recall_vs_windows.png into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / REPORT_MD, format_report(report, title, timing, params))
    write_json_atomic(out / REPORT_JSON, {"title": title, "timing": timing, "params": params,
                                          **dataclasses.asdict(report)})
    plot_recall_curve(report, out / CURVE_PNG, title)
    return out / REPORT_MD
