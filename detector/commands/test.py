"""Test a trained detector on a dataset split and write the evaluation report.

    sppnet test --model runs/raccoon/model.pt --data ../shared/data/raccoon --split test --out runs/raccoon/test

Writes detections (COCO JSON and VOC comp4 files), metrics.json, report.md and PR curves.
"""
from __future__ import annotations

import argparse

from detector.model import load_model
from detector.testing import METRICS, print_outcome, run_test


def main(argv=None, prog: str | None = None) -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model file written by sppnet train")
    p.add_argument("--data", help="dataset root (default: the one the model was trained on)")
    p.add_argument("--split", default="test")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--metric", choices=METRICS, default="voc07",
                   help="voc07: 11-point AP (VOC 2007); voc12: area under the PR curve; coco: AP 0.5:0.95")
    p.add_argument("--cache-rcnn-features", action="store_true",
                   help="R-CNN models only: keep the test windows' pool5 in a per-window cache (as R-CNN "
                        "did), so another model on the same backbone tests without conv passes")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    detector = load_model(args.model)
    outcome = run_test(detector, args.split, args.out, args.metric, data_root=args.data,
                       progress=not args.no_progress, cache_rcnn_features=args.cache_rcnn_features)
    print_outcome(outcome)
    return 0

