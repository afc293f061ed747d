"""Evaluate saved detections against a dataset split and write the report.

    sppnet evaluate --data VOCdevkit/VOC2007 --split test \\
        --detections runs/voc/test/voc --out runs/voc/eval [--metric voc07|voc12|coco] [--iou 0.5]
    sppnet evaluate --data coco --split val2017 --format coco \\
        --annotations annotations/instances_{split}.json --images {split} \\
        --detections results.json --out eval --metric coco

--detections is a COCO results JSON file or a folder of VOC comp4 files
(comp4_det_<split>_<class>.txt). Writes metrics.json, report.md, report.html,
precision/recall, F1, confusion-matrix and error plots to --out and prints the
per-class table.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from detector.data import coco_category_ids, coco_image_ids, load_dataset, report_dropped_classes
from detector.evaluation import (DEFAULT_IOU, METRICS, analyse_detections, evaluate_detections,
                                 format_report_table, read_coco_results, read_voc_results, write_report)
from detector.fileio import check_output_dir


def main(argv=None, prog: str | None = None) -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="dataset root")
    p.add_argument("--split", required=True, help="split to evaluate (also names the comp4 files)")
    p.add_argument("--detections", required=True,
                   help="COCO results JSON file, or a folder of comp4_det_<split>_<class>.txt files")
    p.add_argument("--out", required=True, help="output folder for metrics.json, report.md, plots")
    p.add_argument("--metric", choices=METRICS, default="voc07",
                   help="voc07: 11-point AP; voc12: area under the PR curve; coco: AP 0.5:0.95")
    p.add_argument("--iou", type=float, default=None,
                   help=f"VOC match threshold, inclusive (default {DEFAULT_IOU}); not for --metric coco")
    p.add_argument("--format", choices=("voc", "coco"), default="voc", help="dataset format")
    p.add_argument("--annotations", default="", help="COCO format: annotations JSON (may contain {split})")
    p.add_argument("--images", default="", help="COCO format: image folder (may contain {split})")
    p.add_argument("--score-threshold", type=float, default=None,
                   help="operating point of the error analysis and confusion matrix (default: best F1)")
    p.add_argument("--classes", default="",
                   help="comma-separated class names in label order (default: from the data); objects of "
                        "the split's other classes are left out and listed as not_in_model")
    args = p.parse_intermixed_args(argv)
    if args.metric == "coco" and args.iou is not None:
        p.error("--iou applies to the VOC metrics only (COCO averages IoU 0.5:0.95)")
    iou = DEFAULT_IOU if args.iou is None else args.iou
    if not 0.0 < iou <= 1.0:
        p.error(f"--iou {iou} must be in (0, 1]")

    class_names = [c.strip() for c in args.classes.split(",") if c.strip()] or None
    check_output_dir(args.out, "--out")
    # Scoring needs the annotations only: image files are not read or required.
    dataset = load_dataset(args.data, args.split, format=args.format, class_names=class_names,
                           annotations=args.annotations, images=args.images, require_images=False,
                           drop_other_classes=True)
    not_in_model = report_dropped_classes(dataset, args.data, "the model (--classes)")
    records = list(dataset)
    names = dataset.class_names
    category_ids = dict(zip(names, coco_category_ids(dataset)))

    detections_path = Path(args.detections)
    if detections_path.is_dir():
        detections = read_voc_results(detections_path, names, args.split)
    elif detections_path.is_file():
        detections = read_coco_results(detections_path, names, category_ids,
                                       image_ids=coco_image_ids(dataset))
    else:
        raise FileNotFoundError(f"{detections_path}: no such detections file or folder")

    t = time.perf_counter()
    result = evaluate_detections(records, detections, names, args.metric, iou=iou, category_ids=category_ids)
    seconds = time.perf_counter() - t
    analysis = analyse_detections(records, detections, names, args.score_threshold,
                                  iou_threshold=0.5 if args.metric == "coco" else iou,
                                  use_07_metric=args.metric == "voc07")
    files = write_report(args.out, result, config=vars(args), analysis=analysis,
                         timings={"evaluate_s": seconds, "images": len(records)},
                         extra={"split": args.split, "data_root": args.data,
                                "detections": str(detections_path), "not_in_model": not_in_model})
    print(format_report_table(result))
    print(f"report: {files.report}")
    return 0

