"""Image classification with spatial pyramid pooling (SPP-net Sec. 3): train, evaluate, predict.

    sppnet classify train --config configs/classify/bccd_mobilenet.yaml [key=value ...]
    sppnet classify evaluate --model runs/cls/model.pt --out runs/cls/test [data.root=... data.test_split=...]
    sppnet classify predict --model runs/cls/model.pt --input crops/ --output runs/cls/pred

train writes workdir/model.pt and workdir/report.{json,md} (top-1, per-class
accuracy, confusion matrix on data.test_split); evaluate writes the same
report for a split; predict writes OUTPUT/predictions.csv (file, class, score).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import sys

from detector.classification.config import load_classify_config
from detector.classification.data import load_classification_set, read_examples
from detector.classification.model import load_classifier
from detector.classification.report import train_record, write_evaluation
from detector.classification.training import class_probabilities, evaluate_classifier, train_classifier
from detector.configio import ConfigError, from_dict, merge, parse_overrides, to_dict
from detector.fileio import check_output_dir, write_text_atomic
from detector.images import is_image_file, read_image
from detector.inference.folders import list_inputs

logger = logging.getLogger(__name__)

ACTIONS = ("train", "evaluate", "predict")
# What evaluate may change in a model's config: where the data is, and the test size.
EVALUATE_OVERRIDABLE = ("data", "input.test_size")


def main(argv=None, prog: str | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = prog or "sppnet classify"
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=f"{prog} <action> --help: the action's options")
    p.add_argument("action", choices=ACTIONS)
    action = p.parse_args(argv[:1]).action  # the action's own parser reads the rest
    run = {"train": run_train, "evaluate": run_evaluate, "predict": run_predict}[action]
    return run(argv[1:], f"{prog} {action}")


def run_train(argv: list[str], prog: str) -> int:
    p = argparse.ArgumentParser(prog=prog, description="Train an SPP classifier and evaluate it on data.test_split.")
    p.add_argument("--config", help="YAML config (only what differs from the defaults)")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation on data.test_split")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. data.root=/data/cells")
    args = p.parse_intermixed_args(argv)
    cfg = load_classify_config(args.config, args.overrides)
    check_output_dir(cfg.workdir, "workdir")
    result = train_classifier(cfg, evaluate=not args.no_eval)
    record = train_record(result, cfg)
    summary = {"model": str(result.model_path), "epoch_seconds": result.epoch_seconds}
    if result.evaluation is not None:
        report = write_evaluation(cfg.workdir, result.evaluation, f"Classifier on {cfg.data.root} {cfg.data.test_split}", record)
        summary.update(report=str(report), top1=result.evaluation.top1)
    print(json.dumps(summary, indent=2))
    return 0


def run_evaluate(argv: list[str], prog: str) -> int:
    p = argparse.ArgumentParser(prog=prog, description="Top-1 and confusion matrix of a classifier on a split.")
    p.add_argument("--model", required=True, help="model file written by sppnet classify train")
    p.add_argument("--out", required=True, help="folder for report.json and report.md")
    p.add_argument("--split", help="split to evaluate (default: the model's data.test_split)")
    p.add_argument("overrides", nargs="*", help="data.key=value or input.test_size=N, e.g. data.root=/data/other")
    args = p.parse_intermixed_args(argv)
    model, cfg, class_names = load_classifier(args.model)
    cfg = with_evaluate_overrides(cfg, args.overrides)
    check_output_dir(args.out, "--out")
    split = args.split or cfg.data.test_split
    data = load_classification_set(cfg.data, split, class_names=class_names)
    evaluation = evaluate_classifier(model, cfg, data)
    report = write_evaluation(args.out, evaluation, f"Classifier on {data.name}", {"model": args.model})
    print(json.dumps({"report": str(report), "top1": evaluation.top1, "count": evaluation.count}, indent=2))
    return 0


def with_evaluate_overrides(cfg, overrides: list[str]):
    """The model's config with data.* and input.test_size changed; anything else is an error."""
    bad = [o for o in overrides if not o.split("=", 1)[0].startswith(("data.", "input.test_size"))]
    if bad:
        raise ConfigError(f"command line: {', '.join(bad)}: evaluate may change only "
                          f"{' and '.join(EVALUATE_OVERRIDABLE)} (the rest is what the model was trained with)")
    return from_dict(type(cfg), merge(to_dict(cfg), parse_overrides(overrides)), "command line")


def run_predict(argv: list[str], prog: str) -> int:
    p = argparse.ArgumentParser(prog=prog, description="Classify images: a file, a folder, a glob or a list file.")
    p.add_argument("--model", required=True, help="model file written by sppnet classify train")
    p.add_argument("--input", required=True, help="an image, a folder, a glob pattern (quote it) or a .txt of paths")
    p.add_argument("--output", required=True, help="folder for predictions.csv")
    p.add_argument("--recursive", action="store_true", help="with a folder --input: its subfolders too")
    args = p.parse_intermixed_args(argv)
    model, cfg, class_names = load_classifier(args.model)
    out = check_output_dir(args.output, "--output")
    listed = list_inputs(args.input, recursive=args.recursive)
    files = [f for f in listed if is_image_file(f)]
    if len(files) < len(listed):
        logger.warning("skipped %d file(s) that are not images by their extension, e.g. %s",
                       len(listed) - len(files), next(f for f in listed if not is_image_file(f)))
    if not files:
        raise FileNotFoundError(f"{args.input}: no image files to classify")
    probs = class_probabilities(model, [read_image(f) for f in files], cfg)
    best = probs.max(dim=1)
    rows = [(str(f), class_names[int(k)], f"{float(s):.4f}") for f, s, k in zip(files, best.values, best.indices)]
    write_text_atomic(out / "predictions.csv", _csv(("file", "class", "score"), rows))
    for row in rows:
        print(",".join(row))
    return 0


def _csv(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()
