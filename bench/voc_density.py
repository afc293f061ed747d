"""Windows per image of selective search on the VOC-like generated sets and on photos (issue 29).

VOC photographs give selective search ~2000 windows per image; the figures of
a VOC-sized run (pooling, SVMs, memory) grow with that count, so a generated
stand-in must reach it. This measures, with the proposal settings of a config
(by default configs/voc2007_mobilenet.yaml's ``proposals:``), the windows and
seconds of the search per image on:

- the first ``--images`` trainval images of the generated set
  (``detector.data.voc_like``) for each ``--backgrounds`` entry, written under
  ``--scratch`` and read back from their JPEG files as training reads them,
- the first ``--images`` files (sorted by name) of each ``--photos`` folder.

Each image is searched once with the cap lifted: ``windows_all`` is what the
search found (clipped, over min_size, deduplicated), ``windows`` is what the
pipeline keeps, the first ``max_windows`` of them (min(windows_all, cap)).
One process, one OpenCV thread: seconds are per core.

Run: python -m bench.voc_density --images 30 --photos ../shared/data/raccoon/JPEGImages \
         --out bench/results/voc_scale/density_check.json
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "voc2007_mobilenet.yaml"
MACHINE = "2 CPU cores, no GPU"
UNCAPPED = 10 ** 9


def image_files(folder: Path, limit: int) -> list[Path]:
    """The first ``limit`` image files of ``folder``, sorted by name."""
    from detector.images import is_image_file

    files = sorted(p for p in folder.iterdir() if is_image_file(p))
    if not files:
        raise ValueError(f"{folder}: no image files")
    return files[:limit]


def measure(files: list[Path], cfg) -> dict:
    """Windows (capped and not) and search seconds of each file, and their summary."""
    from detector.images import read_image
    from proposals import propose_with_config

    uncapped = dataclasses.replace(cfg, max_windows=UNCAPPED)
    found, seconds = [], []
    for k, path in enumerate(files):
        image = read_image(path)
        t = time.perf_counter()
        found.append(len(propose_with_config(image, uncapped)))
        seconds.append(time.perf_counter() - t)
        print(f"  {k + 1}/{len(files)} {path.name}: {found[-1]} windows, {seconds[-1]:.2f} s",
              file=sys.stderr, flush=True)
    kept = np.minimum(found, cfg.max_windows)
    return {"images": len(files), "files": [p.name for p in files],
            "windows": summary(kept), "windows_all": summary(np.array(found)),
            "seconds_per_image": summary(np.array(seconds)),
            "per_image": {"windows_all": found, "seconds": [round(s, 3) for s in seconds]}}


def summary(values: np.ndarray) -> dict[str, float]:
    """Median, 10th and 90th percentile and mean."""
    p10, median, p90 = np.percentile(values, [10, 50, 90])
    return {"median": float(median), "p10": float(p10), "p90": float(p90), "mean": float(np.mean(values))}


def main(argv=None) -> int:
    import cv2

    from detector.config import load_detector_config
    from detector.data.voc_like import BACKGROUNDS, make_voc_like
    from detector.evaluation.report import collect_versions
    from detector.fileio import write_json_atomic

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=CONFIG, help="whose proposals: section is measured")
    p.add_argument("--images", type=int, default=30, help="images per set")
    p.add_argument("--backgrounds", nargs="*", default=list(BACKGROUNDS), choices=BACKGROUNDS)
    p.add_argument("--photos", type=Path, nargs="*", default=[], help="folders of photos for reference")
    p.add_argument("--scratch", type=Path, default=Path("/tmp/voc_density"), help="where the sets are generated")
    p.add_argument("--condition", default="loaded (other users' jobs; load average recorded)")
    p.add_argument("--out", type=Path, required=True, help="the JSON record")
    args = p.parse_args(argv)
    cv2.setNumThreads(1)
    cfg = load_detector_config(args.config, []).proposals
    load_before = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    sets = {}
    for background in args.backgrounds:
        root = make_voc_like(args.scratch / background, args.images, 0, seed=0, background=background)
        print(f"voc_like {background}:", file=sys.stderr)
        sets[f"voc_like_{background}"] = measure(image_files(root / "JPEGImages", args.images), cfg)
    for folder in args.photos:
        print(f"{folder}:", file=sys.stderr)
        sets[str(folder)] = measure(image_files(folder, args.images), cfg)
    record = {"command": "python -m bench.voc_density " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": MACHINE, "condition": args.condition, "started": started,
              "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
              "versions": {**collect_versions(), "opencv": cv2.__version__},
              "proposals": dataclasses.asdict(cfg), "sets": sets}
    write_json_atomic(args.out, record)
    for name, s in sets.items():
        w, a, t = s["windows"], s["windows_all"], s["seconds_per_image"]
        print(f"{name}: {s['images']} images, windows median {w['median']:.0f} (p10 {w['p10']:.0f}, "
              f"p90 {w['p90']:.0f}), uncapped median {a['median']:.0f} (p10 {a['p10']:.0f}, p90 {a['p90']:.0f}), "
              f"search {t['median']:.2f} s/img median")
    return 0


if __name__ == "__main__":
    sys.exit(main())
