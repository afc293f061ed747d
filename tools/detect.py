"""Run a trained detector on an image or a folder of images.

    python tools/detect.py --model runs/raccoon/model.pt --input photos/ --output out/

Writes out/results.json (file, boxes, class names, scores) and one annotated
image per input. Non-image files are skipped with a warning.
"""
from __future__ import annotations

import argparse
import sys

from detector.cli import run_cli
from detector.fileio import check_output_dir
from detector.inference import detect_files, list_inputs
from detector.model import load_model


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model file written by tools/train.py")
    p.add_argument("--input", required=True, help="an image file or a folder of images")
    p.add_argument("--output", required=True, help="folder for results.json and annotated images")
    p.add_argument("--draw-threshold", type=float, default=0.0,
                   help="draw detections whose SVM score is at least this (all are in results.json)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where the conv layers run (auto: CUDA when available)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("overrides", nargs="*",
                   help="test-time key=value overrides (sections proposals, features, test), e.g. test.nms_iou=0.4")
    args = p.parse_args(argv)
    check_output_dir(args.output, "--output")
    detector = load_model(args.model, device=args.device, overrides=args.overrides)
    summary = detect_files(detector, list_inputs(args.input), args.output, args.draw_threshold,
                           progress=not args.no_progress)
    n = sum(len(r["detections"]) for r in summary["images"])
    print(f"{len(summary['images'])} images, {n} detections, {len(summary['skipped'])} skipped "
          f"-> {args.output}/results.json")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
