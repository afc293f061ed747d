"""Compute and cache the selective search windows of a dataset split; optionally report recall.

    sppnet propose --data ../shared/data/raccoon --split test --report runs/props
    sppnet propose --data DATA --split test proposals.method=opencv_quality proposals.upscale=2
    sppnet propose --data DATA --split trainval --tune --report runs/props

Windows go to ``--cache`` (default ./cache/proposals), one store per dataset,
split and parameter setting; a killed run resumes; an image whose file
changed is recomputed. ``--report DIR`` writes recall at IoU 0.5:0.95, a
recall-vs-windows curve (PNG), ABO/MABO per class, windows and seconds per image.
"""
from __future__ import annotations

import argparse
import time

from detector.backends import add_backend_arguments, backend_options, open_backend
from detector.build import build_dataset
from detector.config import load_detector_config
from detector.configio import from_dict, parse_overrides
from detector.data import load_dataset
from detector.fileio import params_digest
from detector.images import read_image
from proposals import ProposalConfig, compute_split, evaluate_proposals, summarize_store
from proposals.compute import resolve_workers
from proposals.report import write_report
from proposals.store import cache_params
from proposals.tune import sample_records, tune_proposals


def main(argv=None, prog: str | None = None) -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="detector config: take its proposals section, data root and cache "
                                    "folder, so that sppnet train and sppnet test reuse these windows")
    p.add_argument("--data", help="dataset root (PASCAL VOC layout; default: the config's data.root)")
    p.add_argument("--split", required=True, help="ImageSets/Main/<split>.txt")
    p.add_argument("--method", help="shorthand for proposals.method=...")
    p.add_argument("--cache", help="cache root (default: the config's <cache root>/proposals, "
                                   "else cache/proposals)")
    p.add_argument("--workers", type=int, help="processes (default: proposals.workers; 0 = all cores)")
    p.add_argument("--limit", type=int, default=0, help="only the first N images of the split (0 = all)")
    p.add_argument("--report", help="write recall report (md, json, png) into this folder")
    p.add_argument("--tune", action="store_true",
                   help="first try a few settings on proposals.auto_sample images of the split, print recall, "
                        "windows and seconds of each, and search the split with the chosen one (what "
                        "proposals.auto=true does in training)")
    p.add_argument("--no-progress", action="store_true")
    add_backend_arguments(p)
    p.add_argument("overrides", nargs="*",
                   help="proposals.key=value (or key=value), e.g. proposals.max_side=0")
    args = p.parse_intermixed_args(argv)
    backend_opts = backend_options(args)

    overrides = [o if o.startswith("proposals.") else f"proposals.{o}" for o in args.overrides]
    if args.method:
        overrides.append(f"proposals.method={args.method}")
    if args.config:
        detector_cfg = load_detector_config(args.config, overrides)
        cfg = detector_cfg.split_search(args.split)
        args.data = args.data or detector_cfg.data.root
        args.cache = args.cache or str(detector_cfg.cache_root() / "proposals")
    else:
        cfg = from_dict(ProposalConfig, parse_overrides(overrides).get("proposals", {}), "proposals")
        args.cache = args.cache or "cache/proposals"
    if not args.data:
        p.error("--data is required without --config")

    # The same dataset (format, annotation file) and store name as training and testing use.
    dataset = (build_dataset(detector_cfg.data, args.split, root=args.data) if args.config
               else load_dataset(args.data, args.split))
    records = list(dataset)
    if args.limit > 0:
        records = records[:args.limit]
    dataset_key = dataset.name
    if args.tune:
        tuning = tune_proposals(sample_records(records, cfg.auto_sample, seed=0), lambda r: read_image(r.path),
                                dataset.class_names, cfg, target=cfg.auto_target, log=print)
        cfg = tuning.chosen
        print(f"chosen: {tuning.describe()}")
    workers = resolve_workers(args.workers, cfg, len(records))
    start = time.perf_counter()
    with open_backend(backend_opts) as backend:
        store = compute_split(records, cfg, args.cache, dataset_key, args.split, workers=workers,
                              progress=not args.no_progress, backend=backend)
    wall = time.perf_counter() - start
    ids = [r.image_id for r in records]
    timing = summarize_store(store, ids)
    timing.update(wall_seconds=wall, workers=workers)
    print(f"{store.root}: {timing['images']} images, {timing['windows_per_image']:.0f} windows/image, "
          f"{timing['seconds_per_image_mean']:.2f} s/image search (one core), {wall:.1f} s wall")
    if args.report:
        report = evaluate_proposals(records, store.load_all(), dataset.class_names,
                                    max_windows=cfg.max_windows)
        title = f"{dataset_key}/{args.split}, {cfg.method} (params {params_digest(cache_params(cfg))})"
        path = write_report(report, args.report, title, timing, cache_params(cfg))
        print(f"recall@0.5 {report.recall_at(0.5):.3f}, AR {report.average_recall:.3f}, "
              f"MABO {report.mabo:.3f}; report: {path}")
    return 0

