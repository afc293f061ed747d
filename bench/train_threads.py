"""Training under load: conv fine-tuning iterations with torch's fixed threads against the
adapting thread policy (``detector.threads.adapting_threads``), quiet and beside busy processes.

On 2 cores torch runs every op on both; when another process keeps one core busy, each op's
closing barrier waits for a time slice of the thread that lost its core. Training's long loops
now re-choose their threads as the machine's load changes. This measures both policies in one
process, side by side, alternating, on the same trunk, head and windows (``bench.finetune_speed``'s
prefix route): "fixed" is ``SPPNET_THREADS`` set to torch's default (training before the policy),
"adaptive" the policy. ``--loads 0 1`` runs each pair quiet and beside 1 busy-looping process
(``bench.speed.background_load``); run it with nothing else on the machine.

Run: python -m bench.train_threads --config configs/raccoon_mobilenet.yaml --images 20 --iterations 40 \\
         --loads 0 1 --repeats 2 --root /tmp/tt data.root=... backbone.weights=...
Writes bench/results/train_threads/<name>.json.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

import detector  # noqa: F401  (isort: skip) sets THP_MEM_ALLOC_ENABLE before torch loads

import torch  # noqa: E402

from bench.finetune_speed import run_mode  # noqa: E402
from bench.speed import background_load  # noqa: E402
from detector.config import load_detector_config  # noqa: E402
from detector.evaluation.report import collect_versions  # noqa: E402
from detector.fileio import write_json_atomic  # noqa: E402
from detector.threads import THREADS_ENV  # noqa: E402
from detector.training.context import conv_samples  # noqa: E402
from detector.training.train import build_training_context  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "train_threads"
POLICIES = ("fixed", "adaptive")


@contextlib.contextmanager
def policy(name: str, threads: int):
    """``fixed``: SPPNET_THREADS pins torch's default; ``adaptive``: no pin (the policy)."""
    before = os.environ.pop(THREADS_ENV, None)
    if name == "fixed":
        os.environ[THREADS_ENV] = str(threads)
    try:
        yield
    finally:
        os.environ.pop(THREADS_ENV, None)
        if before is not None:
            os.environ[THREADS_ENV] = before


def summarize(runs: list[dict]) -> dict:
    """Median seconds per iteration per (load, policy), and adaptive's speed-up over fixed."""
    out: dict = {}
    for load in sorted({r["load"] for r in runs}):
        row = {p: statistics.median(r["s_per_iteration"] for r in runs if r["load"] == load and r["policy"] == p)
               for p in POLICIES if any(r["load"] == load and r["policy"] == p for r in runs)}
        if len(row) == 2:
            row["fixed_over_adaptive"] = round(row["fixed"] / row["adaptive"], 2)
        out[str(load)] = row
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--images", type=int, default=20, help="training images (data.max_train_images)")
    p.add_argument("--iterations", type=int, default=40, help="iterations per measurement")
    p.add_argument("--loads", type=int, nargs="+", default=[0, 1], help="busy-looping processes beside it")
    p.add_argument("--repeats", type=int, default=2, help="rounds of every (load, policy), order alternating")
    p.add_argument("--root", type=Path, required=True, help="workdir and cache root (not in the repo)")
    p.add_argument("--name", default="raccoon_20img")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = p.parse_args(argv)
    cfg = load_detector_config(args.config, [*args.overrides, f"data.max_train_images={args.images}",
                                             f"finetune.iterations={args.iterations}",
                                             f"workdir={args.root / 'run'}", f"cache_dir={args.root / 'cache'}"])
    if not cfg.finetune.conv_layers:
        raise SystemExit(f"{args.config}: finetune.conv_layers is 0; this measures conv fine-tuning")
    ctx = build_training_context(cfg, progress=False)
    ctx.propose()
    samples = conv_samples(ctx, cfg.finetune)
    trunk = copy.deepcopy(ctx.backbone.state_dict())
    default_threads = torch.get_num_threads()
    run_mode(ctx, cfg, samples, trunk, "prefix", args.root)  # fills the prefix cache; not timed
    load_before = os.getloadavg()[0]
    runs = []
    for rep in range(args.repeats):
        for load in args.loads:
            order = POLICIES if rep % 2 == 0 else POLICIES[::-1]
            with background_load(load, seconds=3600) if load else contextlib.nullcontext():
                for name in order:
                    with policy(name, default_threads):
                        result = run_mode(ctx, cfg, samples, trunk, "prefix", args.root)
                    result.update(load=load, policy=name, repeat=rep)
                    runs.append(result)
                    print(json.dumps(result), flush=True)
    record = {"command": " ".join(["python -m bench.train_threads", *(argv if argv is not None else sys.argv[1:])]),
              "machine": "2 CPU cores, no GPU", "torch_default_threads": default_threads,
              "load_1min_before": load_before, "load_1min_after": os.getloadavg()[0],
              "images": ctx.num_images, "samples": len(samples), "config": args.config,
              "conv_layers": cfg.finetune.conv_layers, "scales": cfg.features.scales,
              "median_s_per_iteration": summarize(runs), "runs": runs,
              "versions": collect_versions(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_json_atomic(RESULTS / f"{args.name}.json", record)
    print(json.dumps(record["median_s_per_iteration"], indent=1))
    return record


if __name__ == "__main__":
    main()
