"""Train an SPP-net detector: proposals, conv5 cache, fine-tuning, SVMs, box regression.

    sppnet train --config configs/raccoon_mobilenet.yaml [key=value ...]
    sppnet train --config configs/voc2007_mobilenet.yaml --backend ray --ray-address auto

Every stage is cached under the config's workdir, so a killed run resumes.
With --backend ray the proposal and conv5-cache stages run as Ray tasks (the
same cache entries: a Ray run and a local run resume each other).
"""
from __future__ import annotations

import argparse
import dataclasses
import json

from detector.backends import add_backend_arguments, backend_options, open_backend
from detector.config import load_detector_config
from detector.fileio import check_output_dir
from detector.training.train import train


def main(argv=None, prog: str | None = None) -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML config (only what differs from the defaults)")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. data.root=/data/VOC2007")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"),
                   help="where the conv layers and fine-tuning run (default: the config's device)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars or interval log lines (each stage still logs when it finishes)")
    add_backend_arguments(p)
    args = p.parse_intermixed_args(argv)
    backend_opts = backend_options(args)
    cfg = load_detector_config(args.config, args.overrides)
    if args.device:
        cfg = dataclasses.replace(cfg, device=args.device)
    check_output_dir(cfg.workdir, "workdir")
    with open_backend(backend_opts) as backend:
        result = train(cfg, progress=not args.no_progress, backend=backend)
    print(json.dumps({"model": str(result.model_path), "report": str(result.report_path),
                      "train_images": result.train_images, "skipped_images": result.skipped_images,
                      "reused_stages": result.reused_stages,
                      "classes_without_training_objects": result.classes_without_training_objects,
                      "timings_s": result.timings,
                      "proposal_recall": {"iou_0.5": result.proposal_fit.get("recall_50"),
                                          "iou_0.7": result.proposal_fit.get("recall_70")}}, indent=2))
    return 0

