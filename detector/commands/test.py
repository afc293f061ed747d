"""Test a trained detector on a dataset split and write the evaluation report.

    sppnet test --model runs/raccoon/model.pt --data ../shared/data/raccoon --split test --out runs/raccoon/test

Writes detections (COCO JSON and VOC comp4 files), metrics.json, report.md and PR curves.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from detector.backends import add_backend_arguments, backend_options, open_backend
from detector.evaluation import METRICS
from detector.fileio import check_output_dir
from detector.model import load_trained
from detector.inference.split_test import EvaluationOptions, print_outcome, run_model_test


def main(argv=None, prog: str | None = None) -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model file written by sppnet train")
    p.add_argument("--data", help="dataset root (default: the one the model was trained on)")
    p.add_argument("--split", default="test")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--metric", choices=METRICS, default="voc07",
                   help="voc07: 11-point AP (VOC 2007); voc12: area under the PR curve; coco: AP 0.5:0.95")
    p.add_argument("--format", choices=("voc", "coco"), help="dataset format (default: the model's)")
    p.add_argument("--cache", help="cache folder for the test split's proposals (and features with "
                                   "--cache-features); default: cache/ beside the model file")
    p.add_argument("--cache-features", action="store_true",
                   help="keep the test images' window features (SPP: conv5 maps; R-CNN mode: per-window "
                        "pool5, as R-CNN did), so another model on the same backbone tests without conv passes")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where the conv layers run (auto: CUDA when available)")
    p.add_argument("--no-progress", action="store_true")
    add_backend_arguments(p)
    p.add_argument("overrides", nargs="*",
                   help="test-time key=value overrides of the model's config (sections data, proposals, "
                        "features, test; pool.window_margin, pool.window_scaling), e.g. test.nms_iou=0.4 "
                        "features.scales=[480,688] test.order=nms_then_regress")
    args = p.parse_intermixed_args(argv)
    backend_opts = backend_options(args)
    out = check_output_dir(args.out, "--out")
    model = load_trained(args.model, device=args.device, overrides=args.overrides)
    options = EvaluationOptions(args.split, out, args.metric, data_root=args.data, data_format=args.format,
                                cache_dir=Path(args.cache or Path(args.model).resolve().parent / "cache"),
                                cache_features=args.cache_features, progress=not args.no_progress)
    with open_backend(backend_opts) as backend:
        outcome = run_model_test(model, options, backend)
    print_outcome(outcome)
    return 0

