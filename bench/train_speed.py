"""Training time per stage from fresh caches: `sppnet train` on a config, as a user runs it.

The workdir and the cache root are ``<folder>/run`` and ``<folder>/cache`` (the
folder must be new or empty: the caches are fresh). ``--load N`` starts N
busy-looping processes (bench.speed's bounded background load) for the
duration. The record (bench/results/train_speed/<name>.json) holds the
seconds per stage (train_report.json's timings), the total wall time, the
peak RSS of the largest process of the run (the train command or one of its
workers), the config and overrides, the versions, the machine and the load.

Run: python -m bench.train_speed --config configs/raccoon_mobilenet.yaml --folder /tmp/ts \
         --name raccoon_quiet [--load 2] [key=value ...]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import time
from pathlib import Path

from bench.checkout import checkout_env, sppnet_command
from bench.speed import background_load
from detector.evaluation.report import collect_versions
from detector.fileio import write_json_atomic
from bench.stamps import utc_now

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "train_speed"
MACHINE = "2 CPU cores, no GPU"


def check_fresh(folder: Path) -> None:
    """``folder`` must not exist yet or be empty: every cache under it starts empty."""
    if folder.exists() and any(folder.iterdir()):
        raise ValueError(f"{folder}: not empty; train_speed measures from fresh caches (give a new folder)")


def train_command(config: str, folder: Path, overrides: list[str]) -> list[str]:
    """The `sppnet train` command line for ``config`` with its workdir and caches under ``folder``."""
    return sppnet_command("train", "--config", config, "--no-progress",
                          f"workdir={folder / 'run'}", f"cache_dir={folder / 'cache'}", *overrides)


def run_measured(command: list[str], log: Path) -> tuple[int, float, float]:
    """Run ``command`` (stdout and stderr to ``log``, this checkout's package first); its exit status, wall seconds and the peak
    RSS in MB of its largest process (itself or a descendant it waited for: os.wait4's rusage)."""
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(command, env=checkout_env(), stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.perf_counter() - start, usage.ru_maxrss / 1024  # ru_maxrss: kB on Linux


def stage_seconds(report: dict) -> dict[str, float]:
    """Seconds per stage from a train_report.json (its timings, rounded), "total" last."""
    timings = {k: round(v, 1) for k, v in report["timings"].items() if k != "total"}
    return dict(timings, total=round(report["timings"]["total"], 1))


def make_record(command: list[str], report: dict, wall: float, peak_rss_mb: float, load: int,
                load_before: float, started: str) -> dict:
    """The benchmark record of one measured run (``started``: UTC as the run began; finished: now)."""
    return {"command": " ".join(command), "machine": MACHINE, "cores": len(os.sched_getaffinity(0)),
            "condition": "loaded" if load else "as found", "background_load_processes": load,
            "load_1min_before": round(load_before, 2),
            "stages_s": stage_seconds(report), "wall_s": round(wall, 1), "peak_rss_mb": round(peak_rss_mb),
            "train_images": report.get("train_images"), "config": report["config"],
            "versions": collect_versions(), "started": started, "finished": utc_now()}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--folder", type=Path, required=True, help="new or empty folder for the workdir and caches")
    p.add_argument("--name", required=True, help="record name: bench/results/train_speed/<name>.json")
    p.add_argument("--load", type=int, default=0, help="busy-looping processes for the duration (0: none)")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder of the records")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = p.parse_args(argv)
    check_fresh(args.folder)
    args.folder.mkdir(parents=True, exist_ok=True)
    command = train_command(args.config, args.folder, args.overrides)
    load_before, started = os.getloadavg()[0], utc_now()
    # The load is bounded by timeout too, in case this process is killed.
    with background_load(args.load, seconds=4 * 3600) if args.load else contextlib.nullcontext():
        status, wall, rss = run_measured(command, args.folder / "train.log")
    if status != 0:
        raise SystemExit(f"error: training failed (exit {status}); see {args.folder / 'train.log'}")
    report = json.loads((args.folder / "run" / "train_report.json").read_text())
    record = make_record(command, report, wall, rss, args.load, load_before, started)
    write_json_atomic(args.out / f"{args.name}.json", record)
    print(json.dumps(record["stages_s"]), f"peak RSS {record['peak_rss_mb']} MB", flush=True)
    return record


if __name__ == "__main__":
    main()
