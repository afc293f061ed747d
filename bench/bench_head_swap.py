"""Which stage loses when SPP-net trains on denser windows: the fine-tuned fc head or the SVMs?

    .venv/bin/python bench/bench_head_swap.py [--seeds 0 1 2]

Raccoon, SPP 1-scale, protocols B (default search, ~1000 windows per training
image) and P (~1900). For each seed, the fc head fine-tuned under one protocol
is put under the other protocol's SVM training (stage checkpoints copied into
a fresh workdir; the SVMs and box regressors are then trained or taken as
named below), and every model is tested on both protocols' test windows.
Needs ``bench_detection.py run --only fewimg_spp1_fc7 paper_spp1_fc7 --seeds ...``
first. Writes bench/results/swap/raccoon_head_swap.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from bench_detection import (BY_NAME, DEFAULT_WINDOWS, PAPER_WINDOWS, RESULTS, RUNS, experiment_config,
                             run_name, with_test_overrides)

from detector.fileio import write_json_atomic
from detector.model import load_model
from detector.testing import run_test
from detector.training import TrainingContext, train

DATASET = "raccoon"
TEST_WINDOWS = {"P": PAPER_WINDOWS[DATASET], "B": DEFAULT_WINDOWS[DATASET]}
# name -> (protocol whose windows train the SVMs, where the fc head comes from, where box regression comes from)
SWAPS = {"headB_svmP": ("paper_spp1_fc7", "fewimg_spp1_fc7", "paper_spp1_fc7"),
         "headP_svmB": ("fewimg_spp1_fc7", "paper_spp1_fc7", "fewimg_spp1_fc7")}


def _stage_file(workdir: Path, stage: str) -> Path:
    found = sorted((workdir / "stages").glob(f"{stage}-*.pt"))
    if not found:
        raise SystemExit(f"{workdir}: no {stage} checkpoint; run bench_detection.py run for it first")
    return found[0]


def _test(model_path: Path, overrides: list[str], out_dir: Path) -> tuple[float, float]:
    detector = with_test_overrides(load_model(model_path), overrides)
    outcome = run_test(detector, detector.cfg.data.test_split, out_dir, progress=False)
    metrics = json.loads((out_dir / "metrics.json").read_text())
    return outcome.result.mAP, metrics["without_bbox_regression"]["mAP"]


def swap_run(name: str, seed: int) -> dict:
    svm_exp, head_exp, bbox_exp = SWAPS[name]
    workdir = RUNS / DATASET / "head_swap" / f"{name}_seed{seed}"
    cfg = experiment_config(DATASET, BY_NAME[svm_exp], seed)
    cfg.workdir = str(workdir)
    ctx = TrainingContext(cfg, progress=False)
    for stage, source, section in (("finetune", head_exp, cfg.finetune), ("bbox", bbox_exp, cfg.bbox)):
        target = ctx.stage_path(stage, section)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_stage_file(RUNS / DATASET / run_name(BY_NAME[source], seed), stage), target)
    model_path = train(cfg, progress=False)
    record = {"swap": name, "seed": seed, "svm_windows_from": svm_exp, "head_from": head_exp,
              "bbox_from": bbox_exp}
    for windows, overrides in TEST_WINDOWS.items():
        record[f"test_{windows}"] = dict(zip(("mAP", "mAP_without_bbox"),
                                             _test(model_path, overrides, workdir / f"test_{windows}")))
    return record


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = p.parse_args(argv)
    records = []
    for seed in args.seeds:
        for name in SWAPS:
            records.append(swap_run(name, seed))
            print(json.dumps(records[-1]), flush=True)
    write_json_atomic(RESULTS / "swap" / f"{DATASET}_head_swap.json", {"runs": records})
    return 0


if __name__ == "__main__":
    sys.exit(main())
