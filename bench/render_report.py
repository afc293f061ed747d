"""Open a test report (report.html) in headless Chromium and save a screenshot for the README.

    .venv/bin/python -m bench.render_report                       # train a small model, test, render
    .venv/bin/python -m bench.render_report --report runs/mine/test/report.html

Without --report it trains a small detector on generated shapes (the set-up
of tests/test_end_to_end.py, about a minute on 2 cores) into bench/out/report
and tests it, which writes the report. Chromium (Debian: ``apt-get install
chromium``) opens the file offline, with networking, sync and component
updates off; the check is that it exits cleanly and draws a page that is not
blank. The screenshot is scaled down and palette-quantised to stay small.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out" / "report"
SCREENSHOT = REPO / "docs" / "report_screenshot.png"
WINDOW = (1200, 2400)  # CSS pixels: the headline, the tables and the first plots
SAVED_WIDTH = 800  # the README image; keeps the PNG well under 300 KB
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]


def build_report(out: Path) -> Path:
    """Train the small end-to-end detector on generated data, test it; returns report.html."""
    from detector.config import load_detector_config
    from detector.data import make_synthetic_voc
    from detector.model import load_trained
    from detector.inference.split_test import EvaluationOptions, run_model_test
    from detector.training.train import train

    data = make_synthetic_voc(out / "data", num_train=40, num_test=16, seed=3)
    cfg = load_detector_config(None, [
        f"data.root={data}", f"workdir={out / 'run'}", "backbone.name=tiny", "features.scales=[288]",
        "finetune.hidden=256", "finetune.iterations=300", "finetune.bank_bg_per_image=64",
        "proposals.workers=1"])
    run_model_test(load_trained(train(cfg, progress=False).model_path),
                   EvaluationOptions("test", out / "test", progress=False))
    return out / "test" / "report.html"


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return name
    raise SystemExit("no Chromium on PATH (Debian: apt-get install chromium)")


def screenshot(report: Path, png: Path) -> None:
    """Render ``report`` headless into ``png`` (full window size)."""
    with tempfile.TemporaryDirectory() as profile:
        res = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                              f"--screenshot={png}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                              report.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    if res.returncode != 0 or not png.is_file():
        raise SystemExit(f"chromium failed ({res.returncode}): {res.stderr[-2000:]}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--report", type=Path, help="report.html to render (default: build one)")
    p.add_argument("--out", type=Path, default=SCREENSHOT, help="screenshot PNG")
    args = p.parse_args(argv)
    report = args.report or build_report(OUT)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "shot.png"
        screenshot(report, raw)
        image = Image.open(raw).convert("RGB")
    pixels = np.asarray(image)
    if pixels.std() < 5:
        raise SystemExit(f"{report}: the page rendered blank")
    small = image.resize((SAVED_WIDTH, round(image.height * SAVED_WIDTH / image.width)), Image.LANCZOS)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    small.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(args.out, optimize=True)
    print(f"{report} rendered ({image.width}x{image.height}); screenshot {args.out} "
          f"({args.out.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
