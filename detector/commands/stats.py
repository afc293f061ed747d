"""Print statistics of a dataset split: per-class counts, image and box sizes, unreadable images.

Exit code 0: the split is fine; 1: some images are unreadable (training and
testing would skip them); 2: the annotations or image sizes are wrong.

    sppnet stats --data VOCdevkit/VOC2007 --split test
    sppnet stats --data /data/mine --split trainval --recall --config configs/raccoon_mobilenet.yaml
    sppnet stats --data coco --split val2017 --format coco \
        --annotations annotations/instances_{split}.json --images {split}2017
"""
from __future__ import annotations

import argparse
import logging
import sys

from detector.data import DATASET_FORMATS, DatasetError, load_dataset, report_dropped_classes
from detector.data.stats import compute_dataset_stats, format_dataset_stats
from detector.data.verify import verify_images
from detector.images import ImageReadError


def parse_args(argv=None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="dataset root (the VOC-layout folder for voc)")
    p.add_argument("--split", required=True, help="split name, e.g. trainval or test")
    p.add_argument("--format", default="voc", choices=DATASET_FORMATS)
    p.add_argument("--annotations", default="", help="coco: JSON path relative to --data, may hold {split}")
    p.add_argument("--images", default="", help="coco: image folder relative to --data, may hold {split}")
    p.add_argument("--class-names", default="", help="comma-separated label order (default: discovered)")
    p.add_argument("--recall", action="store_true",
                   help="also compute the split's proposals and report their recall at IoU 0.5 and 0.7 "
                        "per class (what training reports and warns on)")
    p.add_argument("--config", help="with --recall: search with this config's proposals section, into its "
                                    "cache (training then reuses the windows); default: the defaults")
    p.add_argument("--cache", default="cache/proposals",
                   help="with --recall and no --config: where the windows are cached")
    return p.parse_intermixed_args(argv)


def report_recall(args, dataset) -> None:
    """Print the proposal fit of the split (``proposals.fit``) and its warning, if any."""
    from detector.config import Config, load_detector_config
    from proposals import compute_split
    from proposals.fit import fit_warning, format_fit, measure_fit

    cfg = load_detector_config(args.config, []) if args.config else Config()
    cache = cfg.cache_root() / "proposals" if args.config else args.cache
    records = list(dataset)
    search = cfg.split_search(args.split)  # without --config: the default search (no train_max_side)
    store = compute_split(records, search, cache, dataset.name, args.split, skip_bad_images=True)
    good = [r for r in records if r.image_id in store]  # unreadable images were skipped
    fit = measure_fit(good, store.load, dataset.class_names, args.split, search.min_size)
    print(format_fit(fit))
    warning = fit_warning(fit, search)
    if warning:
        print(f"warning: {warning}")


def main(argv=None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    names = [n for n in args.class_names.split(",") if n] or None
    try:
        dataset = load_dataset(args.data, args.split, format=args.format, class_names=names,
                               annotations=args.annotations, images=args.images)
        report_dropped_classes(dataset, args.data, "--class-names")  # COCO leaves them out
    except (DatasetError, ImageReadError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_dataset_stats(compute_dataset_stats(dataset)))
    try:  # the same up-front check training and testing run: decodable, sizes as annotated
        verified = verify_images(list(dataset), what=f"{args.data} {args.split} split")
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"images checked: {len(dataset)}, unreadable: {len(verified.bad)}")
    for bad in verified.bad:
        print(f"  {bad.path}: {bad.reason}")
    if args.recall:
        report_recall(args, dataset)
    return 1 if verified.bad else 0

