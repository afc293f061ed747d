"""One training stage recomputed by two code trees, alternating, on copies of a finished workdir.

Each run copies ``<source>/run`` (a workdir `bench.train_speed` left, with its
caches under ``<source>/cache``), deletes the checkpoint of ``--stage`` (and the
model file and report), and runs `sppnet train` from ``--old`` or ``--new``
(source trees, used through PYTHONPATH). The earlier stages are restored from
their checkpoints and the caches are warm, so the record holds that stage's
seconds (the report's ``timings[stage]``) per run, side by side, and how far the
new model's arrays are from the old one's (largest absolute difference, and
whether they are equal).

Run: python -m bench.stage_ab --stage bbox --config configs/raccoon_mobilenet.yaml \
         --source /tmp/ts2/raccoon_s0 --old /tmp/oldtree --new . --repeats 2 \
         --name raccoon_bbox data.root=... backbone.weights=...
Writes bench/results/stage_ab/<name>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from detector.evaluation.report import collect_versions
from detector.fileio import write_json_atomic
from bench.stamps import utc_now

RESULTS = Path(__file__).resolve().parent / "results" / "stage_ab"


def run_side(tree: Path, source: Path, folder: Path, stage: str, config: str, overrides: list[str]) -> tuple[float, list]:
    """The stage's seconds in one `sppnet train` from ``tree`` on a copy of ``source``'s workdir,
    and the passes its report's stats list (the SVM stage's collect and mining passes)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    run = folder / "run"
    shutil.copytree(source / "run", run)
    for path in [*run.glob(f"stages/{stage}-*.pt"), run / "stages" / f"{stage}.last.json",
                 run / "model.pt", run / "train_report.json"]:
        path.unlink(missing_ok=True)
    env = dict(os.environ, PYTHONPATH=str(tree))
    with open(folder / "train.log", "w") as log:
        subprocess.run([sys.executable, "-m", "detector.commands", "train", "--config", config, "--no-progress",
                        f"workdir={run}", f"cache_dir={source / 'cache'}", *overrides],
                       cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    report = json.loads((run / "train_report.json").read_text())
    if stage in report["reused_stages"]:
        raise RuntimeError(f"{folder}: stage {stage} was restored, not recomputed")
    return float(report["timings"][stage]), report_facts(report, stage)


def report_facts(report: dict, stage: str) -> list[dict]:
    """What a run's train_report says of the stage: its passes' seconds (the SVM stage's collect
    and mining), the mean norm of its feature scale, its seed negatives, and the data it saw."""
    stats = report.get("stats", {}).get(stage, {})
    facts = [{"name": q["name"], "seconds": round(q["seconds"], 2)} for q in stats.get("passes", [])]
    if "mean_norm" in stats:  # the SVM stage: the norm its feature scale came from
        facts.append({"name": "mean_norm", "value": stats["mean_norm"]})
    seeds = stats.get("seed_negatives")
    if seeds:
        facts.append({"name": "seed_negatives", "per_class_capacity": seeds.get("per_class_capacity"),
                      "offered_per_class": [min(seeds["offered"]), max(seeds["offered"])],
                      "kept_per_class": [min(seeds["kept"]), max(seeds["kept"])]})
    facts.append({"name": "data", "train_images": report.get("train_images"),
                  "flipped_images": report.get("flipped_images"),
                  "windows_per_train_image": report.get("windows_per_train_image")})
    return facts


def model_difference(old: Path, new: Path) -> dict:
    """The two model files' floating-point arrays compared: how many are equal, and for
    each that differs its largest absolute difference and largest magnitude."""
    def tensors(x, prefix=""):
        if isinstance(x, dict):
            for k, v in x.items():
                yield from tensors(v, f"{prefix}/{k}")
        elif torch.is_tensor(x) and x.is_floating_point():
            yield prefix, x.double()

    a = dict(tensors(torch.load(old, weights_only=True, map_location="cpu")))
    b = dict(tensors(torch.load(new, weights_only=True, map_location="cpu")))
    per_array = {}
    for name in sorted(a.keys() & b.keys()):
        if "/extra/" in name or a[name].shape != b[name].shape:
            continue
        per_array[name] = {"max_abs_diff": float((a[name] - b[name]).abs().max()) if a[name].numel() else 0.0,
                           "max_abs": float(a[name].abs().max()) if a[name].numel() else 0.0,
                           "equal": bool(torch.equal(a[name], b[name]))}
    return summarized(per_array)


def summarized(per_array: dict) -> dict:
    """How many arrays are equal, and the entries of those that differ."""
    return {"arrays": len(per_array), "equal_arrays": sum(d["equal"] for d in per_array.values()),
            "different": {k: d for k, d in per_array.items() if not d["equal"]}}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--stage", required=True, help="the stage to recompute (its checkpoint name: svm, bbox...)")
    p.add_argument("--config", required=True)
    p.add_argument("--source", type=Path, required=True, help="folder with run/ and cache/ (bench.train_speed's)")
    p.add_argument("--old", type=Path, required=True, help="source tree of the old code")
    p.add_argument("--new", type=Path, default=Path("."), help="source tree of the new code")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--scratch", type=Path, default=Path("/tmp/stage_ab"))
    p.add_argument("--condition", choices=["quiet", "loaded"], default="quiet")
    p.add_argument("--name", required=True)
    p.add_argument("--new-override", action="append", default=[], dest="new_overrides", metavar="KEY=VALUE",
                   help="an override for the new side only (a setting the old code does not have); repeatable")
    p.add_argument("overrides", nargs="*", help="key=value config overrides (data.root=..., ...)")
    args = p.parse_args(argv)

    seconds: dict[str, list[float]] = {"old": [], "new": []}
    passes: dict[str, list[list]] = {"old": [], "new": []}
    for rep in range(args.repeats):
        for side in ("old", "new"):
            tree = (args.old if side == "old" else args.new).resolve()
            extra = args.new_overrides if side == "new" else []
            s, side_passes = run_side(tree, args.source.resolve(), args.scratch / f"{args.name}_{side}_{rep}",
                                      args.stage, args.config, args.overrides + extra)
            seconds[side].append(round(s, 2))
            passes[side].append(side_passes)
            print(f"{side} {rep}: {args.stage} {s:.1f} s", flush=True)
    record = {
        "command": "python -m bench.stage_ab " + " ".join(sys.argv[1:] if argv is None else argv),
        "stage": args.stage, "config": args.config, "source": str(args.source), "condition": args.condition,
        "machine": f"{os.cpu_count()} cores, no GPU", "load_1min_at_end": os.getloadavg()[0],
        "new_overrides": args.new_overrides, "seconds": seconds, "passes": passes,
        "median_s": {k: statistics.median(v) for k, v in seconds.items()},
        "ratio_old_over_new": statistics.median(seconds["old"]) / statistics.median(seconds["new"]),
        "model_difference": model_difference(args.scratch / f"{args.name}_old_0" / "run" / "model.pt",
                                             args.scratch / f"{args.name}_new_0" / "run" / "model.pt"),
        "trees": {side: subprocess.run(["git", "-C", str(t), "describe", "--always", "--dirty"], capture_output=True,
                                       text=True).stdout.strip() for side, t in (("old", args.old), ("new", args.new))},
        "versions": collect_versions(), "finished": utc_now(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{args.name}.json"
    write_json_atomic(out, record)
    print(json.dumps({k: record[k] for k in ("median_s", "ratio_old_over_new")}), f"-> {out}")


if __name__ == "__main__":
    main()
