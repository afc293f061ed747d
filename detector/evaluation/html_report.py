"""report.html: the whole evaluation in one self-contained file that opens offline.

Every image (plots, thumbnails of the worst errors) is embedded as a base64
data URI and the style is inline, so the file can be mailed or archived
alone; nothing is fetched. Built from the same metrics dict as metrics.json,
the PNGs written beside it and, if given, the
:class:`~detector.evaluation.analysis.Analysis` (its tables come from
:mod:`detector.evaluation.analysis_report`, so they match report.md).
"""
from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path
from typing import Mapping, Sequence

from detector.evaluation import analysis_report as tables
from detector.evaluation.error_examples import caption, draw_examples
from detector.fileio import write_text_atomic
from detector.images import encode_jpeg

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1150px;
color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:0}h3{margin:4px 0}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}th{background:#f3f5f7}
td:first-child,th:first-child{text-align:left}
.headline td{font-size:15px}.muted{color:#666;font-size:13px}
img.plot{max-width:100%;border:1px solid #eee}
.row{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}.row>div{flex:1 1 520px;min-width:0}
.strip{display:flex;flex-wrap:wrap;gap:8px}.strip figure{margin:0;font-size:11px;max-width:480px}
pre{background:#f6f8fa;padding:8px;font-size:12px;overflow:auto;max-height:400px}
"""


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def table_html(header: Sequence[str], rows: Sequence[Sequence[str]], css: str = "") -> str:
    cls = f' class="{css}"' if css else ""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def row_html(*cells: str) -> str:
    """Cells side by side (they wrap on a narrow window)."""
    return '<div class="row">' + "".join(f"<div>{c}</div>" for c in cells if c) + "</div>"


def image_html(path: Path | None, alt: str) -> str:
    """An <img> with the PNG at ``path`` embedded; empty if there is no such file."""
    if path is None or not Path(path).is_file():
        return ""
    return f'<img class="plot" alt="{html.escape(alt)}" src="{data_uri(Path(path).read_bytes(), "image/png")}">'


def flatten(obj, prefix: str = "") -> list[tuple[str, str]]:
    """Nested dict -> (dotted key, value text) rows; floats with 4 significant digits."""
    if isinstance(obj, Mapping):
        return [row for k, v in obj.items() for row in flatten(v, f"{prefix}{k}.")]
    value = f"{obj:.4g}" if isinstance(obj, float) else str(obj)
    return [(prefix.rstrip("."), value)]


def headline_rows(metrics: Mapping, analysis) -> list[tuple[str, str]]:
    rows = [("metric", metrics["metric_description"]), ("mAP (%)", tables.pct(metrics["mAP"]))]
    rows += [(f"{k} (%)", tables.pct(v)) for k, v in metrics.get("summary", {}).items() if k != "mAP"]
    plain = metrics.get("without_bbox_regression")
    if isinstance(plain, Mapping) and "mAP" in plain:
        rows.append(("mAP without box regression (%)", tables.pct(plain["mAP"])))
    for key in ("split", "images"):
        value = metrics.get(key, metrics.get("timings", {}).get(key))
        if value is not None:
            rows.append((key, str(value)))
    if analysis is not None:
        pooled = analysis.f1[tables.ALL_CLASSES].summary()
        rows += [("operating point", f"score >= {tables.num(analysis.score_threshold)} ({analysis.threshold_rule})"),
                 ("best F1 (all classes)", f"{tables.num(pooled['best_f1'])} at {tables.num(pooled['best_threshold'])}")]
        rows += [(f"mAP {s} objects (%)", tables.pct(v)) for s, v in analysis.size_ap.mAP.items()]
    return rows


def format_html_report(metrics: Mapping, class_table: tables.Table, figures: Mapping[str, Path],
                       analysis=None, thumbnails: Sequence[tuple[object, bytes]] = ()) -> str:
    """The page. ``figures`` maps "pr", "f1", "confusion", "errors" to PNG paths;
    ``thumbnails`` holds (ErrorExample, JPEG bytes)."""
    parts = [f"<h1>Detection evaluation</h1><p class=muted>{html.escape(metrics['metric_description'])}"
             + (f", IoU threshold {metrics['iou_threshold']:g}" if "iou_threshold" in metrics else "") + "</p>",
             row_html(table_html(("", ""), headline_rows(metrics, analysis), "headline"),
                      "<h3>Average precision per class</h3><p class=muted>AP in %; #gt counts non-difficult "
                      "objects.</p>" + table_html(*class_table)),
             "<h2>Precision / recall" + (" and F1 against score threshold" if analysis else "") + "</h2>"]
    pr = image_html(figures.get("pr"), "precision/recall curves")
    if analysis is None:
        parts.append(pr)
    else:
        parts += [f"<p>{html.escape(tables.operating_point_text(analysis))}</p>",
                  row_html(pr, image_html(figures.get("f1"), "F1 curves")),
                  table_html(*tables.class_rows(analysis)),
                  "<h2>Confusion matrix</h2><p class=muted>Rows: true class; columns: predicted; "
                  f"{analysis.confusion.ignored} detection(s) on difficult objects left out.</p>",
                  row_html(image_html(figures.get("confusion"), "confusion matrix"),
                           table_html(*tables.confusion_rows(analysis))),
                  "<h2>Error breakdown</h2><p class=muted>Localisation: right class, 0.1 &le; IoU &lt; 0.5; "
                  "confusion: another class's object; mAP points if fixed: the false positives of that kind "
                  "removed from the ranking, or the objects never found removed from the positives.</p>",
                  row_html(table_html(*tables.error_rows(analysis)) + table_html(*tables.missed_rows(analysis)),
                           image_html(figures.get("errors"), "error breakdown"))]
        if thumbnails:
            items = "".join(f'<figure><img alt="{html.escape(caption(e))}" src="{data_uri(jpeg, "image/jpeg")}">'
                            f"<figcaption>{html.escape(caption(e))}</figcaption></figure>"
                            for e, jpeg in thumbnails)
            parts += ["<h2>Worst false positives and missed objects</h2><p class=muted>Red: a false "
                      "positive; blue: a missed object; green: the object it overlaps.</p>",
                      f'<div class="strip">{items}</div>']
    if "timings" in metrics:
        parts += ["<h2>Timings</h2>", table_html(("stage", "value"), flatten(metrics["timings"]))]
    for key in ("config", "versions"):
        if key in metrics:
            parts += [f"<h2>{key.capitalize()}</h2><details{' open' if key == 'versions' else ''}>"
                      f"<summary>{key}</summary><pre>{html.escape(json.dumps(metrics[key], indent=2))}</pre></details>"]
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>Detection evaluation</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")


def write_html_report(out_dir: str | os.PathLike, metrics: Mapping, class_table: tables.Table,
                      figures: Mapping[str, Path], analysis=None) -> Path:
    """Write ``out_dir``/report.html (thumbnails of the analysis' examples drawn here)."""
    thumbs = [] if analysis is None else [(e, encode_jpeg(t, quality=85))
                                          for e, t in draw_examples(analysis.examples)]
    path = Path(out_dir) / "report.html"
    write_text_atomic(path, format_html_report(metrics, class_table, figures, analysis, thumbs))
    return path
