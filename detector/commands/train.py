"""Train an SPP-net detector: proposals, conv5 cache, fine-tuning, SVMs, box regression.

    sppnet train --config configs/raccoon_mobilenet.yaml [key=value ...]

Every stage is cached under the config's workdir, so a killed run resumes.
"""
from __future__ import annotations

import argparse
import json
import logging

from detector.config import load_detector_config
from detector.model import read_model_extra
from detector.training import train


def main(argv=None, prog: str | None = None) -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML config (only what differs from the defaults)")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. data.root=/data/VOC2007")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    cfg = load_detector_config(args.config, args.overrides)
    model_path = train(cfg, progress=not args.no_progress)
    extra = read_model_extra(model_path)
    print(json.dumps({"model": str(model_path), "timings_s": extra.get("timings", {})}, indent=2))
    return 0

