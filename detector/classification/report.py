"""The classifier's report: report.json (numbers) and report.md (top-1, per-class accuracy, confusion)."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from ..configio import to_dict
from ..evaluation.analysis_report import markdown_table, pct
from ..fileio import write_json_atomic, write_text_atomic
from .config import ClassifyConfig
from .training import Evaluation, TrainResult


def evaluation_dict(ev: Evaluation) -> dict:
    return {"size": ev.size, "count": ev.count, "top1": ev.top1, "mean_class_accuracy": ev.mean_class_accuracy,
            "class_names": list(ev.class_names), "class_accuracy": ev.class_accuracy,
            "confusion": ev.confusion.tolist()}


def format_evaluation_markdown(ev: Evaluation, title: str) -> str:
    """Top-1, per-class accuracy and the confusion matrix (rows: true, columns: predicted)."""
    per_class = (("class", "examples", "accuracy (%)"),
                 [(name, str(int(n)), pct(a)) for name, n, a in
                  zip(ev.class_names, ev.confusion.sum(axis=1), ev.class_accuracy)])
    confusion = (("true \\ predicted",) + ev.class_names,
                 [(name,) + tuple(str(int(v)) for v in row) for name, row in zip(ev.class_names, ev.confusion)])
    lines = [f"# {title}", "",
             f"Top-1 accuracy: **{pct(ev.top1)}%** of {ev.count} examples at input size {ev.size} px "
             f"(mean per-class accuracy {pct(ev.mean_class_accuracy)}%).", ""]
    lines += markdown_table(per_class) + ["", "## Confusion matrix", "", "Rows: true class; columns: predicted.", ""]
    return "\n".join(lines + markdown_table(confusion)) + "\n"


def write_evaluation(out_dir: str | Path, ev: Evaluation, title: str, extra: dict | None = None) -> Path:
    """report.json and report.md in ``out_dir``; returns report.md's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "report.json", {**(extra or {}), "evaluation": evaluation_dict(ev)})
    write_text_atomic(out / "report.md", format_evaluation_markdown(ev, title))
    return out / "report.md"


def train_record(result: TrainResult, cfg: ClassifyConfig) -> dict:
    """What training did, for report.json: config, counts, per-epoch size, loss and time."""
    record = {k: v for k, v in asdict(result).items() if k not in ("evaluation", "model_path")}
    record["map_seconds"] = {str(k): v for k, v in result.map_seconds.items()}
    return {"config": to_dict(cfg), "model": str(result.model_path), "train": record}
