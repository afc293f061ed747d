"""Proposals and the conv5 cache, one after the other or overlapped (issue 23, lever 4).

"sequential" is training today: every image's selective search in
``proposals.workers`` processes (0 = all cores), then the conv5 cache in this
process. "overlapped" runs the same searches in the same worker pool from a
helper thread while this process fills the conv5 cache at the same time, the
network on the cores the workers leave (``network_threads(reserved=workers)``).
Each run starts from fresh caches under ``--root``; modes alternate per repeat
so a change in machine load hits both alike. The conv5 cache files written
are the same either way (checked: their names).

Run: python -m bench.overlap --config configs/bccd_mobilenet.yaml --images 30 --root /tmp/ov \
         data.root=/work/shared/data/bccd/BCCD backbone.weights=/work/shared/weights/mobilenet_v2_imagenet.pth
Writes bench/results/overlap/<name>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import detector  # noqa: F401  (isort: skip) sets THP_MEM_ALLOC_ENABLE before torch loads

from proposals import compute_split  # noqa: E402
from proposals.compute import resolve_workers  # noqa: E402

from detector.build import build_config_backbone, build_dataset, build_window_features  # noqa: E402
from detector.config import load_detector_config  # noqa: E402
from detector.evaluation.report import collect_versions  # noqa: E402
from detector.fileio import file_digest, write_json_atomic  # noqa: E402
from detector.threads import limit_threads, network_threads  # noqa: E402
from detector.features.pool5 import ImageSource  # noqa: E402
from bench.stamps import utc_now  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "overlap"


def one_run(cfg, records, root: Path, overlapped: bool) -> dict:
    """Proposals and conv5 cache of ``records`` from fresh caches under ``root``; seconds."""
    features = build_window_features(cfg, build_config_backbone(cfg), root)
    images = [ImageSource.from_record(r, file_digest(r.path)) for r in records]
    workers = resolve_workers(None, cfg.proposals, len(records))

    def propose():
        compute_split(records, cfg.proposals, root / "proposals", "bench", "train", progress=False)
    start = time.perf_counter()
    if overlapped:
        searches = threading.Thread(target=propose)
        searches.start()
        with limit_threads(network_threads(reserved=workers)):
            features.prepare(images, progress=False)
        conv5_done = time.perf_counter() - start
        searches.join()
    else:
        propose()
        features.prepare(images, progress=False)
        conv5_done = time.perf_counter() - start
    return {"mode": "overlapped" if overlapped else "sequential", "seconds": round(time.perf_counter() - start, 1),
            "conv5_done_s": round(conv5_done, 1), "workers": workers,
            "entries": sorted(p.name for p in (root / "conv5").rglob("*.npz"))}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--images", type=int, default=30)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--root", type=Path, required=True, help="scratch folder for the fresh caches")
    p.add_argument("--name", default="bccd_30img")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    cfg = load_detector_config(args.config, args.overrides)
    records = list(build_dataset(cfg.data, cfg.data.train_split))[:args.images]
    load_before, started = os.getloadavg()[0], utc_now()
    runs = []
    for rep in range(args.repeats):
        for overlapped in (rep % 2 == 1, rep % 2 == 0):
            mode = "overlapped" if overlapped else "sequential"
            runs.append(dict(one_run(cfg, records, args.root / f"{mode}{rep}", overlapped), repeat=rep,
                             load_1min=os.getloadavg()[0]))
            print(json.dumps({k: v for k, v in runs[-1].items() if k != "entries"}), flush=True)
    same_files = len({tuple(r["entries"]) for r in runs}) == 1
    summary = {m: statistics.median(r["seconds"] for r in runs if r["mode"] == m)
               for m in ("sequential", "overlapped")}
    record = {"command": " ".join(["python -m bench.overlap", *(argv if argv is not None else sys.argv[1:])]),
              "machine": "2 CPU cores, no GPU", "condition": "loaded (other users' jobs; load average recorded)",
              "load_1min_before": load_before, "images": len(records), "median_s": summary,
              "same_cache_files": same_files, "runs": [{k: v for k, v in r.items() if k != "entries"} for r in runs],
              "versions": collect_versions(), "started": started, "finished": utc_now()}
    write_json_atomic(RESULTS / f"{args.name}.json", record)
    print(json.dumps(summary), "same files:", same_files)
    return record


if __name__ == "__main__":
    main()
