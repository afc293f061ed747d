"""Which stage loses when SPP-net trains on denser windows: the fine-tuned fc head or the SVMs?

    .venv/bin/python -m bench.head_swap [--seeds 0 1 2]

Raccoon, SPP 1-scale, protocols B (default search, ~1000 windows per training
image) and P (~1900). For each seed, the fc head fine-tuned under one protocol
is put under the other protocol's SVM training (stage checkpoints copied into
a fresh workdir; the SVMs and box regressors are then trained or taken as
named below), and every model is tested on both protocols' test windows.
Needs ``bench/detection.py run --only fewimg_spp1_fc7 paper_spp1_fc7 --seeds ...``
first. Writes bench/results/swap/raccoon_head_swap.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

from bench.detection import BY_NAME, DEFAULT_WINDOWS, PAPER_WINDOWS, RESULTS, RUNS, experiment_config

from detector.fileio import write_json_atomic
from detector.model import load_trained
from detector.inference.split_test import EvaluationOptions, run_model_test
from detector.training.train import train

DATASET = "raccoon"
TEST_WINDOWS = {"P": PAPER_WINDOWS[DATASET], "B": DEFAULT_WINDOWS[DATASET]}
# name -> (protocol whose windows train the SVMs, where the fc head comes from, where box regression comes from)
SWAPS = {"headB_svmP": ("paper_spp1_fc7", "fewimg_spp1_fc7", "paper_spp1_fc7"),
         "headP_svmB": ("fewimg_spp1_fc7", "paper_spp1_fc7", "fewimg_spp1_fc7")}


def _test(model_path: Path, overrides: list[str], out_dir: Path) -> tuple[float, float]:
    model = load_trained(model_path, overrides=overrides)
    outcome = run_model_test(model, EvaluationOptions(model.config.data.test_split, out_dir,
                                                      cache_dir=model.config.cache_root(), progress=False))
    return outcome.result.mAP, outcome.without_bbox.mAP


def swap_run(name: str, seed: int) -> dict:
    """SVMs trained with ``svm_exp``'s windows on top of ``head_exp``'s fine-tuned head.

    The source runs' stages are reused (``train`` returns at once when they
    exist) and tell where their checkpoints are; the head and the box
    regressors are copied under the names this run's own stages look for.
    """
    svm_exp, head_exp, bbox_exp = SWAPS[name]
    workdir = RUNS / DATASET / "head_swap" / f"{name}_seed{seed}"
    cfg = dataclasses.replace(experiment_config(DATASET, BY_NAME[svm_exp], seed), workdir=str(workdir))
    own = train(experiment_config(DATASET, BY_NAME[svm_exp], seed), progress=False).stage_paths
    for stage, source in (("finetune", head_exp), ("bbox", bbox_exp)):
        source_path = train(experiment_config(DATASET, BY_NAME[source], seed), progress=False).stage_paths[stage]
        target = workdir / "stages" / own[stage].name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source_path, target)
    model_path = train(cfg, progress=False).model_path
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
