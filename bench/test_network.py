"""The test-time network alone: seconds per image of `sppnet test` with the split's proposals cached.

The VOC 2007 projection (``bench/voc_density_report.py``) charges the test images'
selective search at the search's own rate (the proposal workers on every core) and
the network per image on top. The 2,500-image VOC-density run measured its test
while that split's search ran beside the network (its pipeline), so the network
had about one core of two there and its seconds were charged twice over. This
measures the network as the projection charges it: a first pass computes the
split's proposals (timed, not counted), then ``--repeats`` passes run
``run_model_test`` with every window cached and nothing else running; the record
keeps each pass's seconds per image and stage and the threads the network chose.

``--load N`` runs the measured passes beside N busy-looping processes
(``bench.speed.background_load``): the thread policy then gives the network what is left.

Run:   python -m bench.test_network --model <model.pt> --split test --name <name> [--repeats 2] [--load N]
Writes bench/results/voc_scale/clutter/<name>.json (``--results`` to change).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.stamps import utc_now

RESULTS = Path(__file__).resolve().parent / "results" / "voc_scale" / "clutter"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--name", required=True)
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--load", type=int, default=0, help="busy-looping background processes during the passes")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")

    from detector.evaluation.report import collect_versions
    from detector.fileio import write_json_atomic
    from detector.inference.split_test import EvaluationOptions, run_model_test
    from detector.model import load_trained
    from bench.speed import background_load

    model = load_trained(args.model, device="cpu")
    out = Path(args.model).parent / f"test_network_{args.split}"

    def one_pass(i: int):
        t = time.perf_counter()
        outcome = run_model_test(model, EvaluationOptions(args.split, out / str(i), progress=False))
        return outcome, time.perf_counter() - t

    first, first_s = one_pass(0)  # computes (or reads) the split's proposals
    with background_load(args.load, seconds=24 * 3600) if args.load else contextlib.nullcontext():
        runs = measured_passes(args, model, one_pass)
    totals = [r["seconds_per_image"]["total_excluding_proposals"] for r in runs]
    record = {
        "command": "python -m bench.test_network " + " ".join(sys.argv[1:] if argv is None else argv),
        "model": str(args.model), "split": args.split, "images": len(first.detections),
        "condition": f"{args.load} busy background processes" if args.load else "quiet",
        "background_load_processes": args.load,
        "model_training": model_training(Path(args.model)),
        "tree": subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                               cwd=Path(__file__).resolve().parents[1]).stdout.strip(),
        "mAP": first.result.mAP, "first_pass_wall_s": round(first_s, 2),
        "first_pass_seconds_per_image": first.seconds_per_image,
        "runs": runs, "median_total_excluding_proposals": statistics.median(totals),
        "machine": f"{os.cpu_count()} cores, no GPU", "load_1min_at_end": os.getloadavg()[0],
        "versions": collect_versions(), "finished": utc_now(),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / f"{args.name}.json"
    write_json_atomic(path, record)
    print(f"median {record['median_total_excluding_proposals']:.3f} s per image -> {path}")
    return 0


def model_training(model_path: Path) -> dict:
    """What the model was trained on, from the train_report.json beside it (empty when absent)."""
    import json

    report = model_path.parent / "train_report.json"
    if not report.exists():
        return {}
    r = json.loads(report.read_text())
    cfg = r.get("config", {})
    return {"train_images": r.get("train_images"), "flipped_images": r.get("flipped_images"),
            "windows_per_train_image": r.get("windows_per_train_image"),
            "finetune_iterations": cfg.get("finetune", {}).get("iterations"),
            "data_root": cfg.get("data", {}).get("root")}


def measured_passes(args, model, one_pass) -> list[dict]:
    """``args.repeats`` passes with the proposals cached: seconds per image and stage each."""
    runs = []
    for i in range(args.repeats):
        threads = model.detector.network_threads()
        outcome, wall = one_pass(i + 1)
        runs.append({"wall_s": round(wall, 2), "network_threads_at_start": threads,
                     "seconds_per_image": {k: round(v, 4) for k, v in outcome.seconds_per_image.items()}})
        print(f"pass {i + 1}: {outcome.seconds_per_image['total_excluding_proposals']:.3f} s per image "
              f"({threads} threads at start)", flush=True)
    return runs


if __name__ == "__main__":
    sys.exit(main())
