"""The README's demo: generate a small dataset, train an SPP-net detector on it, test, report.

    python tools/demo.py --out demo_output [key=value ...]

No network and no pretrained weights: the data are coloured shapes that a
small network learns from scratch (configs/demo.yaml). Prints the mAP report
and writes annotated test images to <out>/detections/.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from detector.hugepages import enable_huge_pages

enable_huge_pages()  # before torch loads, as the sppnet command does

from detector.commands.entry import run_cli  # noqa: E402
from detector.config import load_detector_config  # noqa: E402
from detector.data import make_synthetic_voc  # noqa: E402
from detector.inference.folders import detect_files  # noqa: E402
from detector.model import load_trained  # noqa: E402
from detector.inference.split_test import EvaluationOptions, print_outcome, run_model_test  # noqa: E402
from detector.training.train import train  # noqa: E402

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
# 150 training images give every class a few hundred positives; 60 test
# images make the mAP stable to about a point.
TRAIN_IMAGES, TEST_IMAGES = 150, 60
ANNOTATED_IMAGES = 8


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="demo_output", help="folder for data, caches, model and report")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. features.scales=[288,384]")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_intermixed_args(argv)
    out = Path(args.out)
    start = time.perf_counter()
    cfg = load_detector_config(DEMO_CONFIG, [f"data.root={out / 'data'}", f"workdir={out / 'run'}",
                                             *args.overrides])
    print(f"[1/4] generating {TRAIN_IMAGES}+{TEST_IMAGES} images in {cfg.data.root}")
    make_synthetic_voc(cfg.data.root, TRAIN_IMAGES, TEST_IMAGES, seed=cfg.seed)
    print("[2/4] training: proposals, conv5 cache, fine-tuning, SVMs, box regression")
    model_path = train(cfg, progress=not args.no_progress).model_path
    print(f"[3/4] testing {model_path} on the test split")
    model = load_trained(model_path)
    outcome = run_model_test(model, EvaluationOptions(cfg.data.test_split, out / "test",
                                                      progress=not args.no_progress))
    print("[4/4] annotating test images")
    test_ids = (Path(cfg.data.root) / "ImageSets" / "Main" / "test.txt").read_text().split()
    files = [Path(cfg.data.root) / "JPEGImages" / f"{i}.jpg" for i in test_ids[:ANNOTATED_IMAGES]]
    detect_files(model.detector, files, out / "detections", threshold=0.0, progress=False)
    print()
    print_outcome(outcome)
    print(f"annotated images: {out / 'detections'}   total time: {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
