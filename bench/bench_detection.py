"""SPP-net detection benchmark: accuracy, training time, test time per stage, cache size,
and the side-by-side comparison with R-CNN on the same backbone, windows and classifiers.

    .venv/bin/python bench/bench_detection.py run  [--datasets bccd raccoon] [--only NAME ...]
    .venv/bin/python bench/bench_detection.py speed [--images 5]
    .venv/bin/python bench/bench_detection.py report        # -> bench/results/detection.json + docs

``run`` trains and tests each experiment (stages and caches are reused, so a
killed run resumes); ``speed`` times SPP 1-scale, SPP 5-scale and R-CNN on the
same test images in one process, interleaved image by image; ``report``
gathers everything into bench/results/detection.json and
docs/benchmarks_detection.md. Data: ../shared/data (development only).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from detector.config import load_detector_config
from detector.evaluation.report import collect_versions
from detector.fileio import write_json_atomic, write_text_atomic
from detector.images import read_image
from detector.model import load_model, read_model_extra
from detector.testing import run_test
from detector.training import build_dataset, train

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
RESULTS = REPO / "bench" / "results"
RUNS = REPO / "runs" / "bench"
FIVE_SCALES = "[480,576,688,864,1200]"

DATASETS = {
    "bccd": (SHARED / "data" / "bccd" / "BCCD", REPO / "configs" / "bccd_mobilenet.yaml"),
    "raccoon": (SHARED / "data" / "raccoon", REPO / "configs" / "raccoon_mobilenet.yaml"),
}

# The R-CNN comparison protocols on this CPU: R-CNN convolves every window
# (~18 ms per 224 px MobileNetV2 crop here), so 2000 windows x 292 BCCD images
# would take ~3 h per pass. Both methods are trained and tested on the same
# reduced protocol instead. A: the first 60 training images and only the top
# 100 windows of every image (both sets). B (raccoon only, ~25 min): the first
# 40 training images with all windows.
REDUCED = ["data.max_train_images=60", "proposals.max_windows=100"]
FEW_IMAGES = ["data.max_train_images=40"]


@dataclass(frozen=True)
class Experiment:
    name: str
    label: str
    overrides: list[str] = field(default_factory=list)
    datasets: tuple[str, ...] = tuple(DATASETS)


EXPERIMENTS = [
    Experiment("spp1_pool5", "SPP 1-scale, pool5 + SVM",
               ["svm.feature=pool5", "finetune.enabled=false", "bbox.enabled=false"]),
    Experiment("spp1_fc7", "SPP 1-scale, fine-tuned fc7 + SVM (+ bbox)", []),
    Experiment("spp5_pool5", "SPP 5-scale, pool5 + SVM",
               [f"features.scales={FIVE_SCALES}", "svm.feature=pool5", "finetune.enabled=false",
                "bbox.enabled=false"]),
    Experiment("spp5_fc7", "SPP 5-scale, fine-tuned fc7 + SVM (+ bbox)", [f"features.scales={FIVE_SCALES}"]),
    Experiment("reduced_spp1_fc7", "reduced protocol: SPP 1-scale, fc7 + SVM (+ bbox)", REDUCED),
    Experiment("reduced_rcnn_fc7", "reduced protocol: R-CNN, fc7 + SVM (+ bbox)", REDUCED + ["mode=rcnn"]),
    Experiment("reduced_spp5_fc7", "reduced protocol: SPP 5-scale, fc7 + SVM (+ bbox)",
               REDUCED + [f"features.scales={FIVE_SCALES}"]),
    Experiment("fewimg_spp1_fc7", "protocol B: SPP 1-scale, fc7 + SVM (+ bbox)", FEW_IMAGES, ("raccoon",)),
    Experiment("fewimg_spp5_fc7", "protocol B: SPP 5-scale, fc7 + SVM (+ bbox)",
               FEW_IMAGES + [f"features.scales={FIVE_SCALES}"], ("raccoon",)),
    Experiment("fewimg_rcnn_fc7", "protocol B: R-CNN, fc7 + SVM (+ bbox)", FEW_IMAGES + ["mode=rcnn"],
               ("raccoon",)),
]


def experiment_config(dataset: str, exp: Experiment):
    root, config = DATASETS[dataset]
    return load_detector_config(config, [f"data.root={root}", f"workdir={RUNS / dataset / exp.name}",
                                         f"cache_dir={RUNS / dataset / 'cache'}", *exp.overrides])


def run_experiment(dataset: str, exp: Experiment) -> dict:
    cfg = experiment_config(dataset, exp)
    model_path = train(cfg)
    detector = load_model(model_path)
    outcome = run_test(detector, cfg.data.test_split, Path(cfg.workdir) / "test")
    metrics = json.loads((Path(cfg.workdir) / "test" / "metrics.json").read_text())
    extra = read_model_extra(model_path)
    record = {
        "dataset": dataset, "experiment": exp.name, "label": exp.label, "overrides": exp.overrides,
        "mAP": outcome.result.mAP, "AP": metrics["AP"],
        "mAP_without_bbox": metrics.get("without_bbox_regression", {}).get("mAP"),
        "test_seconds_per_image": outcome.seconds_per_image,
        "train_timings_s": extra.get("timings", {}), "feature_cache_bytes": extra.get("feature_cache_bytes"),
        "train_images": extra.get("train_images"), "test_images": len(outcome.detections),
    }
    write_json_atomic(RESULTS / f"{dataset}_{exp.name}.json", record)
    return record


def speed(dataset: str, n_images: int) -> dict:
    """Per-image test time of SPP 1-scale, SPP 5-scale and R-CNN, interleaved on the same images."""
    wanted = ("spp1_fc7", "spp5_fc7", "reduced_rcnn_fc7")
    models = {name: load_model(RUNS / dataset / name / "model.pt")
              for name in wanted if (RUNS / dataset / name / "model.pt").exists()}
    if "reduced_rcnn_fc7" not in models or len(models) < 2:
        raise SystemExit(f"{dataset}: speed needs reduced_rcnn_fc7 and an SPP model; run 'run' first")
    # Every model runs on the full (2000-cap) windows of the 1-scale experiment.
    cfg = experiment_config(dataset, EXPERIMENTS[1])
    from proposals import compute_split
    test_set = build_dataset(cfg, cfg.data.test_split)
    records = list(test_set)[:n_images]
    store = compute_split(records, cfg.proposals, cfg.cache_root() / "proposals", test_set.name,
                          cfg.data.test_split)
    per_model = {name: [] for name in models}
    windows_per_image = []
    for r in records:
        image, windows = read_image(r.path), store.load(r.image_id)
        windows_per_image.append(len(windows))
        for name, det in models.items():
            t: dict = {}
            start = time.perf_counter()
            det.detect(image, windows, timings=t)
            t["total"] = time.perf_counter() - start
            per_model[name].append(t)
    medians = {name: {k: statistics.median(t[k] for t in ts) for k in ts[0]} for name, ts in per_model.items()}
    rcnn = medians["reduced_rcnn_fc7"]["total"]
    out = {"dataset": dataset, "images": len(records), "windows_per_image": windows_per_image,
           "median_seconds": medians,
           "speedup_vs_rcnn": {n: rcnn / m["total"] for n, m in medians.items() if n != "reduced_rcnn_fc7"},
           "conv_speedup_vs_rcnn": {n: medians["reduced_rcnn_fc7"]["conv"] / m["conv"]
                                    for n, m in medians.items() if n != "reduced_rcnn_fc7"}}
    write_json_atomic(RESULTS / f"{dataset}_speed.json", out)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["run", "speed", "report", "all"])
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--only", nargs="+", default=None, help="experiment names to run")
    p.add_argument("--images", type=int, default=5, help="test images timed by 'speed'")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    if args.command in ("run", "all"):
        for dataset in args.datasets:
            for exp in EXPERIMENTS:
                if (args.only is None or exp.name in args.only) and dataset in exp.datasets:
                    print(f"=== {dataset} {exp.name}", flush=True)
                    print(json.dumps(run_experiment(dataset, exp), indent=1), flush=True)
    if args.command in ("speed", "all"):
        for dataset in args.datasets:
            print(json.dumps(speed(dataset, args.images), indent=1), flush=True)
    if args.command in ("report", "all"):
        from bench_detection_report import assemble_benchmarks_doc, write_detection_report
        write_detection_report(RESULTS, REPO / "docs" / "benchmarks_detection.md",
                               {"python": platform.python_version(), **collect_versions()})
        print(f"wrote {assemble_benchmarks_doc(REPO / 'docs')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
