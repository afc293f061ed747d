"""Benchmark proposal settings: recall@0.5 within max_windows, windows and seconds per image.

    python -m bench.proposals --data ../shared/data/raccoon --data ../shared/data/bccd/BCCD \
        --split test --limit 20 --repeats 3 --settings fast_fullres default --out bench/out
    python -m bench.proposals --make-defects runs/defects --split trainval --limit 0 --repeats 1 \
        --settings default quality dense_6 union_6 --out bench/results/proposal_fit/defects

Each image is searched ``--repeats`` times per setting, the settings taking
turns image by image (so a change in machine load hits all of them alike);
the time of an image is the median of its repeats, and the table reports the
mean and median over images. One process, one OpenCV thread: seconds are per core.

``--scaling`` also times ``compute_split`` on one and on two workers (fresh
caches, wall clock including the worker start) and reports the speed-up.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from detector.data import load_dataset
from detector.fileio import write_json_atomic, write_text_atomic
from detector.images import read_image
from proposals import ProposalConfig, compute_split, evaluate_proposals, propose_with_config

# Named settings (what differs from ProposalConfig's defaults).
SETTINGS = {
    # The baseline: OpenCV fast mode on the full-resolution image.
    "fast_fullres": dict(method="opencv_fast", max_side=0, base_k=150, inc_k=150),
    "fast_500": dict(method="opencv_fast", max_side=500, base_k=150, inc_k=150),
    "default": dict(),
    "quality_500": dict(method="opencv_quality", max_side=500, base_k=150, inc_k=150),
    "selectivesearch_500": dict(method="selectivesearch", max_side=0, base_k=500),  # the row
    # Small, dense objects (BCCD): finer segmentations at full resolution, and
    # a larger min_size so the 2000-window cap keeps cell-sized windows.
    "bccd_dense": dict(method="opencv_fast", max_side=0, base_k=30, inc_k=30, min_size=25.0),
    "fast_k30_500": dict(method="opencv_fast", max_side=500, base_k=30, inc_k=30, min_size=25.0),
    # Cheaper BCCD searches (issue 23: the search is 390 s of the BCCD config's
    # 17 min): the same k on a smaller image (min_size scaled with it, in
    # original pixels it stays 25), coarser k at full resolution, and the
    # smaller search topped up by the ranked dense grid.
    "bccd_560": dict(method="opencv_fast", max_side=560, base_k=30, inc_k=30, min_size=25.0),
    "bccd_k50": dict(method="opencv_fast", max_side=0, base_k=50, inc_k=50, min_size=25.0),
    "bccd_union_500": dict(method="union", max_side=500, base_k=30, inc_k=30, min_size=25.0),
    "bccd_dense_grid": dict(method="dense", min_size=25.0),
    # Cheaper searches for folder runs (issue 12's 1.5 img/s on 500 x 375
    # photos): the longer side at 400 px, with the default k and with k scaled
    # by the pixel count (100 x 0.8^2), which keeps segments the same share
    # of the image.
    "side_400": dict(max_side=400),
    "side_400_k64": dict(max_side=400, base_k=64, inc_k=64),
    # Proposal fit (issue 28): OpenCV's quality mode at the defaults' k, the
    # ranked dense grid alone and after the search, with min_size at 6 px (the
    # setting the fit warning suggests for the defects' narrow scratches).
    "quality": dict(method="opencv_quality"),
    "union": dict(method="union"),
    "dense_6": dict(method="dense", min_size=6.0),
    "union_6": dict(method="union", min_size=6.0),
    "dense_4": dict(method="dense", min_size=4.0),
    "union_4": dict(method="union", min_size=4.0),
}


def load_images(root: str, split: str, limit: int):
    ds = load_dataset(root, split)
    records = [ds[i] for i in range(min(limit, len(ds)) if limit > 0 else len(ds))]
    return ds, records, {r.image_id: read_image(r.path) for r in records}


def bench_settings(records, images, names, repeats):
    """{setting: (boxes by image, per-image median seconds)}, settings interleaved per image."""
    cfgs = {n: dataclasses.replace(ProposalConfig(), **SETTINGS[n]) for n in names}
    boxes = {n: {} for n in names}
    secs = {n: [] for n in names}
    for k, rec in enumerate(records):
        runs = {n: [] for n in names}
        for _ in range(repeats):
            for n in names:
                t = time.perf_counter()
                out = propose_with_config(images[rec.image_id], cfgs[n])
                runs[n].append(time.perf_counter() - t)
                boxes[n][rec.image_id] = out
        for n in names:
            secs[n].append(statistics.median(runs[n]))
        print(f"  image {k + 1}/{len(records)} {rec.image_id}: "
              + ", ".join(f"{n} {secs[n][-1]:.2f}s" for n in names), file=sys.stderr, flush=True)
    return cfgs, boxes, secs


def bench_scaling(records, cfg, repeats):
    """Median wall seconds of compute_split with 1 and 2 workers (fresh caches each time)."""
    out = {}
    for workers in (1, 2):
        walls = []
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as tmp:
                t = time.perf_counter()
                compute_split(records, cfg, Path(tmp), "bench", "split", workers=workers, progress=False)
                walls.append(time.perf_counter() - t)
        out[workers] = statistics.median(walls)
        print(f"  scaling: {workers} worker(s) {walls}", file=sys.stderr, flush=True)
    return out


def bench_large_photo(path: str, repeats: int) -> dict:
    """Seconds of the default setting on ``path`` resized to 4000 x 3000 (12 Mpx)."""
    image = cv2.resize(read_image(path), (4000, 3000), interpolation=cv2.INTER_CUBIC)
    walls, n = [], 0
    for _ in range(repeats):
        t = time.perf_counter()
        n = len(propose_with_config(image, ProposalConfig()))
        walls.append(time.perf_counter() - t)
    return {"photo": Path(path).name, "size": "4000x3000", "seconds_median": statistics.median(walls),
            "windows": n}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", action="append", default=[], help="VOC-layout root (repeatable)")
    p.add_argument("--make-defects", metavar="DIR",
                   help="generate the texture-defect set (detector.data.defects: 200 trainval, 100 test "
                        "images) in DIR and add it to --data")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=20, help="first N images of the split (0 = all)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--settings", nargs="+", default=["fast_fullres", "default"], choices=sorted(SETTINGS))
    p.add_argument("--scaling", action="store_true", help="also time 1 vs 2 workers (default setting)")
    p.add_argument("--scaling-limit", type=int, default=40,
                   help="images for the worker scaling run (more images amortise the worker start)")
    p.add_argument("--large-photo", help="also time the default setting on this photo at 12 Mpx")
    p.add_argument("--out", default="bench/out")
    args = p.parse_args(argv)
    if args.make_defects:
        from detector.data.defects import make_defect_voc
        args.data.append(str(make_defect_voc(args.make_defects)))
    if not args.data:
        p.error("give --data or --make-defects")
    cv2.setNumThreads(1)
    rows, results = [], {}
    for root in args.data:
        ds, records, images = load_images(root, args.split, args.limit)
        name = Path(root).resolve().name
        print(f"{name}: {len(records)} images", file=sys.stderr)
        cfgs, boxes, secs = bench_settings(records, images, args.settings, args.repeats)
        for n in args.settings:
            rep = evaluate_proposals(records, boxes[n], ds.class_names, max_windows=cfgs[n].max_windows)
            row = {"dataset": name, "setting": n, "params": SETTINGS[n],
                   "windows_per_image": rep.windows_per_image,
                   "seconds_mean": float(np.mean(secs[n])), "seconds_median": float(np.median(secs[n])),
                   "recall_0.5": rep.recall_at(0.5), "recall_0.7": rep.recall_at(0.7),
                   "average_recall": rep.average_recall, "mabo": rep.mabo,
                   "recall_vs_windows": dict(zip(rep.window_counts, rep.recall_vs_windows))}
            rows.append(row)
        if args.scaling:
            scale_recs = [ds[i] for i in range(min(args.scaling_limit, len(ds)))]
            walls = bench_scaling(scale_recs, ProposalConfig(), max(1, args.repeats - 1))
            results[f"{name}_scaling"] = {"wall_1_worker": walls[1], "wall_2_workers": walls[2],
                                          "speedup": walls[1] / walls[2]}
    if args.large_photo:
        results["large_photo"] = bench_large_photo(args.large_photo, args.repeats)
    results["rows"] = rows
    lines = ["| set | setting | windows/img | s/img mean | s/img median | recall@0.5 | recall@0.7 | AR | MABO |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['setting']} | {r['windows_per_image']:.0f} | "
                     f"{r['seconds_mean']:.2f} | {r['seconds_median']:.2f} | {r['recall_0.5']:.3f} | "
                     f"{r['recall_0.7']:.3f} | {r['average_recall']:.3f} | {r['mabo']:.3f} |")
    for k, v in results.items():
        if k.endswith("_scaling"):
            lines.append(f"\n{k}: 1 worker {v['wall_1_worker']:.1f} s, 2 workers "
                         f"{v['wall_2_workers']:.1f} s, speed-up {v['speedup']:.2f}x")
    if "large_photo" in results:
        lp = results["large_photo"]
        lines.append(f"\n12 Mpx photo ({lp['photo']} resized to {lp['size']}), default setting: "
                     f"{lp['seconds_median']:.2f} s, {lp['windows']} windows")
    out = Path(args.out)
    write_json_atomic(out / "bench_proposals.json", results)
    write_text_atomic(out / "bench_proposals.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
