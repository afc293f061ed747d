"""The analysis as tables: rows shared by report.md and report.html, and the markdown sections.

Each ``*_rows`` function returns (header, rows) of plain strings, so the
markdown and the HTML writer show the same numbers from one place.
"""
from __future__ import annotations

import math

from detector.evaluation.errors import FP_KINDS
from detector.evaluation.size_ap import SIZE_RANGES
from detector.evaluation.thresholds import ALL_CLASSES

Table = tuple[tuple[str, ...], list[tuple[str, ...]]]


def pct(x: float | None) -> str:
    """A fraction as a percentage with one decimal; n/a for None or NaN."""
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.1f}"


def num(x: float | None) -> str:
    """A score or threshold with 3 significant digits; n/a for None or NaN."""
    return "n/a" if x is None or math.isnan(x) else f"{x:.3g}"


def operating_point_text(analysis) -> str:
    pooled = analysis.f1[ALL_CLASSES].summary()
    return (f"Operating point: score >= {num(analysis.score_threshold)} ({analysis.threshold_rule}); "
            f"IoU >= {analysis.iou_threshold:g}. Best pooled F1 {num(pooled['best_f1'])} at "
            f"{num(pooled['best_threshold'])} (precision {pct(pooled['precision'])}%, "
            f"recall {pct(pooled['recall'])}%).")


def class_rows(analysis) -> Table:
    """Per class: best threshold, F1 there, AP per size range (%)."""
    header = ("class", "best threshold", "F1", "precision", "recall") + tuple(f"AP {s}" for s in SIZE_RANGES)
    rows = []
    for name in analysis.class_names + (ALL_CLASSES,):
        f = analysis.f1[name].summary()
        if name == ALL_CLASSES:
            sizes = tuple(pct(analysis.size_ap.mAP[s]) for s in SIZE_RANGES)
        else:
            sizes = tuple(pct(analysis.size_ap.ap[s][name]) for s in SIZE_RANGES)
        rows.append((name, num(f["best_threshold"]), num(f["best_f1"]), pct(f["precision"]),
                     pct(f["recall"])) + sizes)
    return header, rows


def error_rows(analysis) -> Table:
    """False positives by kind and missed objects: counts and the mAP fixing them adds."""
    e = analysis.errors
    header = ("error", f"at score >= {num(e.score_threshold)}", "all detections", "mAP points if fixed")
    rows = [(k, str(e.fp_at_threshold[k]), str(e.fp_total[k]), f"{100 * e.map_gain[k]:+.1f}") for k in FP_KINDS]
    rows.append(("missed", str(sum(e.missed_at_threshold.values())), str(sum(e.missed_total.values())),
                 f"{100 * e.map_gain['missed']:+.1f}"))
    return header, rows


def missed_rows(analysis) -> Table:
    """Objects and missed objects per size range."""
    e = analysis.errors
    header = ("size", "objects", f"missed at score >= {num(e.score_threshold)}", "never found")
    return header, [(s, str(e.n_gt_by_size[s]), str(e.missed_at_threshold[s]), str(e.missed_total[s]))
                    for s in SIZE_RANGES]


def confusion_rows(analysis) -> Table:
    """The confusion matrix: one row per true class, one column per predicted class."""
    cm = analysis.confusion
    header = ("true \\ predicted",) + cm.labels
    return header, [(name,) + tuple(str(v) for v in row) for name, row in zip(cm.labels, cm.matrix)]


def markdown_table(table: Table) -> list[str]:
    header, rows = table
    return (["| " + " | ".join(header) + " |", "|" + "---|" + "---:|" * (len(header) - 1)]
            + ["| " + " | ".join(r) + " |" for r in rows])


def format_analysis_markdown(analysis, figures: dict[str, str]) -> str:
    """The analysis sections of report.md; ``figures`` maps a section to its PNG's relative path."""
    lines = ["## Operating point and F1", "", operating_point_text(analysis), "",
             "Best threshold and F1 per class; AP (%) by object size (COCO's area ranges, VOC rules).", ""]
    lines += markdown_table(class_rows(analysis)) + [""]
    if "f1" in figures:
        lines += [f"![F1 against threshold]({figures['f1']})", ""]
    lines += ["## Errors", "",
              "False positives by kind (localisation: right class, 0.1 <= IoU < 0.5; duplicate; confusion "
              "with another class; background) and missed objects, with the mAP that fixing each would add.", ""]
    lines += markdown_table(error_rows(analysis)) + [""] + markdown_table(missed_rows(analysis)) + [""]
    if "errors" in figures:
        lines += [f"![errors]({figures['errors']})", ""]
    lines += ["## Confusion matrix", "",
              f"Rows: true class; columns: predicted; score >= {num(analysis.confusion.score_threshold)}, "
              f"IoU >= {analysis.confusion.iou_threshold:g}; {analysis.confusion.ignored} detection(s) on "
              "difficult objects left out.", ""]
    lines += markdown_table(confusion_rows(analysis)) + [""]
    if "confusion" in figures:
        lines += [f"![confusion matrix]({figures['confusion']})", ""]
    if analysis.examples:
        lines += ["## Worst errors", ""]
        lines += [f"- {e.kind}: {e.class_name} " + ("" if e.score is None else f"{e.score:.3g} ")
                  + f"in {e.image_id} at {[round(v, 1) for v in e.box]}" for e in analysis.examples] + [""]
    return "\n".join(lines)
