"""SPP and multi-size training for classification (paper Sec. 3.1, Table 2) on BCCD cell crops.

    .venv/bin/python -m bench.classify [--seeds 0 1 2] [--only spp_multi ...]

configs/classify/bccd_mobilenet.yaml (MobileNetV2 ImageNet weights, last 2 blocks
learn, tested at 128 px; 100 crops per class and 6 epochs, see PROTOCOL) in four variants: the pyramid or a
global average pool over the conv map, trained at 128 px only or at 128 and
96 px in turn (one size per epoch). Every input is the crop warped to a
square, as in the paper's fixed-size training. ``--table`` prints the
table from the records alone. Writes one record per run to
bench/results/classify/<variant>_seed<k>.json and prints the table of
docs/classification.md.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from detector.classification.config import load_classify_config
from detector.classification.report import evaluation_dict, train_record
from detector.classification.training import train_classifier
from detector.fileio import write_json_atomic

CONFIG = "configs/classify/bccd_mobilenet.yaml"
RESULTS = Path("bench/results/classify")
# Fewer examples and epochs than the config: with all 300 crops per class
# every variant errs on 2-3 of ~945 test crops, too few to compare.
PROTOCOL = ["data.max_per_class=100", "train.epochs=6"]
# variant -> overrides of CONFIG
VARIANTS = {
    "global_single": ["model.pool=global", "input.sizes=[128]"],
    "global_multi": ["model.pool=global", "input.sizes=[128,96]"],
    "spp_single": ["model.pool=spp", "input.sizes=[128]"],
    "spp_multi": ["model.pool=spp", "input.sizes=[128,96]"],
    # The same sizes in the other order: the last epoch at the test size
    # (with 6 epochs, [128, 96] ends at 96 px and tests at 128).
    "global_multi_last128": ["model.pool=global", "input.sizes=[96,128]"],
    "spp_multi_last128": ["model.pool=spp", "input.sizes=[96,128]"],
}


def run(variant: str, seed: int, shared: str) -> dict:
    overrides = [*VARIANTS[variant], *PROTOCOL, f"seed={seed}", f"workdir=runs/bench_classify/{variant}_seed{seed}",
                 f"data.root={shared}/data/bccd/BCCD", f"backbone.weights={shared}/weights/mobilenet_v2_imagenet.pth"]
    cfg = load_classify_config(CONFIG, overrides)
    start = time.perf_counter()
    result = train_classifier(cfg)
    record = {"variant": variant, "seed": seed, "overrides": overrides, "wall_s": time.perf_counter() - start,
              **train_record(result, cfg), "evaluation": evaluation_dict(result.evaluation)}
    write_json_atomic(RESULTS / f"{variant}_seed{seed}.json", record)
    return record


def format_table(records: list[dict]) -> str:
    """Mean (min-max) over seeds of top-1 error, mean per-class error and time per epoch."""
    lines = ["| variant | seeds | top-1 error (%) | mean class error (%) | s / epoch | front maps (s, once per size) |",
             "|---|---:|---:|---:|---:|---:|"]
    for variant in VARIANTS:
        rows = [r for r in records if r["variant"] == variant]
        if not rows:
            continue
        top1 = [100 * (1 - r["evaluation"]["top1"]) for r in rows]
        mca = [100 * (1 - r["evaluation"]["mean_class_accuracy"]) for r in rows]
        epoch = statistics.mean(statistics.mean(r["train"]["epoch_seconds"]) for r in rows)
        maps = statistics.mean(sum(r["train"]["map_seconds"].values()) for r in rows)
        lines.append(f"| {variant} | {len(rows)} | {statistics.mean(top1):.2f} ({min(top1):.2f}-{max(top1):.2f}) | "
                     f"{statistics.mean(mca):.2f} ({min(mca):.2f}-{max(mca):.2f}) | {epoch:.1f} | {maps:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--only", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--table", action="store_true", help="only print the table of the records already written")
    p.add_argument("--shared", default="../shared", help="the folder holding data/bccd and weights/")
    args = p.parse_args(argv)
    if args.table:
        records = [json.loads(f.read_text()) for f in sorted(RESULTS.glob("*.json"))]
    else:
        records = [run(v, s, args.shared) for s in args.seeds for v in args.only]
    print(format_table(records))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
