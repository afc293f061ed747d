"""Ray's overhead on one machine: the same images through the local path and through
``--backend ray`` (a private Ray on this machine's cores), side by side.

Three stages, each on the first ``--images`` test images of the generated VOC
2007-shaped set (``bench.voc_scale`` makes it):

- proposals: ``compute_split`` with the local pool of ``--cpus`` worker
  processes vs Ray tasks (``--cpus`` CPUs, shards of ``--shard-size``), each
  into a fresh cache folder;
- conv5 cache: ``SPPFeatures.prepare`` in this process (torch's threads) vs
  Ray tasks of one thread each;
- test inference (windows given): ``detect_records`` in this process vs
  ``detect_on_backend``.

Runs alternate local / Ray ``--runs`` times; medians are reported, and Ray's
first pass apart (its workers start and import torch then). Ray's start-up
(``ray.init``) is timed on its own.

Run: python -m bench.ray_overhead --model runs/voc_like/train500/model.pt
Writes bench/results/ray_overhead.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "runs" / "voc_like" / "data"
RESULTS = REPO / "bench" / "results"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--images", type=int, default=40)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--shard-size", type=int, default=4)
    p.add_argument("--out", type=Path, default=RESULTS / "ray_overhead.json")
    args = p.parse_args(argv)

    from detector.backends import BackendOptions, build_backend
    from detector.build import build_dataset
    from detector.evaluation.report import collect_versions
    from detector.fileio import write_json_atomic
    from detector.model import load_trained
    from detector.inference.split_test import detect_on_backend, detect_records
    from detector.features.pool5 import ImageSource
    from proposals.compute import compute_split

    model = load_trained(args.model, device="cpu")
    detector, cfg = model.detector, model.config
    records = list(build_dataset(cfg.data, cfg.data.test_split, class_names=detector.class_names,
                                 root=str(DATA)))[: args.images]
    start = time.perf_counter()
    backend = build_backend(BackendOptions(name="ray", num_cpus=args.cpus, shard_size=args.shard_size))
    ray_start = time.perf_counter() - start

    times: dict[str, list[float]] = {}

    def timed(name, fn):
        t = time.perf_counter()
        out = fn()
        times.setdefault(name, []).append(time.perf_counter() - t)
        return out

    with tempfile.TemporaryDirectory(dir=REPO / "runs") as tmp:
        tmp = Path(tmp)
        windows = None
        for run in range(args.runs):
            for side in ("local", "ray"):
                root = tmp / f"{side}{run}"
                store = timed(f"proposals_{side}", lambda: compute_split(
                    records, cfg.proposals, root / "proposals", "bench", "test", workers=args.cpus,
                    progress=False, backend=backend if side == "ray" else None))
                windows = windows or [store.load(r.image_id) for r in records]
                features = detector.features.with_cache(root / "features")
                images = [ImageSource.from_record(r) for r in records]
                timed(f"conv5_cache_{side}", lambda: features.prepare(
                    images, progress=False, backend=backend if side == "ray" else None))
                images = [ImageSource.from_record(r) for r in records]
                if side == "ray":
                    timed("detect_ray", lambda: detect_on_backend(detector, images, windows, backend, False))
                else:
                    timed("detect_local", lambda: detect_records(detector, images, windows, False))
    backend.shutdown()

    def summary(values):
        return {"first_s": values[0], "median_s": statistics.median(values),
                "median_after_first_s": statistics.median(values[1:]) if len(values) > 1 else None,
                "runs_s": values, "s_per_image_median": statistics.median(values) / len(records)}

    result = {
        "images": len(records), "runs": args.runs, "cpus": args.cpus, "shard_size": args.shard_size,
        "ray_init_s": ray_start, "stages": {k: summary(v) for k, v in times.items()},
        "ray_over_local": {s: statistics.median(times[f"{s}_ray"]) / statistics.median(times[f"{s}_local"])
                           for s in ("proposals", "conv5_cache", "detect")},
        "load_avg_at_end": os.getloadavg(), "versions": collect_versions(), "model": str(args.model),
    }
    write_json_atomic(args.out, result)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
