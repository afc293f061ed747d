"""The torch-free runtime against the torch detector: s/img by stage, fp32 and int8, cold start.

One run measures, on the same images and the same windows (each image's
selective search, computed once; the search is the same code on both
paths, so it is timed once, as ``proposals``):

- ``warm``: per image, ``Detector.detect`` (the model file; fp32, and
  ``test.fc_compression=int8``) and ``OnnxDetector.detect`` (the export
  folder; fp32, and ``sppnet export --int8``), interleaved image by image,
  ``--runs`` times; per variant and stage the median over runs of the mean
  over images (s/img), and how often each variant's automatic thread
  choice (detector/threads.py, per call, from the load) gave 1 or 2 threads;
- ``equality``: the fp32 runtime's detections against the torch model's
  (largest box and score differences after matching, counts);
- ``cold``: import + load + the first image's detection in a fresh
  subprocess per run (alternating torch and runtime), medians.

``--load N`` starts N busy-looping processes (``timeout 600``) for the whole
run: the bounded background load of bench/speed.py. The 1-minute load
average before and after is recorded either way (this machine is shared:
without --load a run is "quiet" only if that figure says so).

Run: python -m bench.runtime --model runs/raccoon/model.pt --input ../shared/data/raccoon/JPEGImages \
         --split-file ../shared/data/raccoon/ImageSets/Main/test.txt --images 5 --runs 3 [--load 2]
Writes bench/results/runtime/<name>.json (the command, machine, conditions, versions, figures).
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


import numpy as np  # noqa: E402

from bench.speed import background_load  # noqa: E402
from detector.deploy.export import export_model  # noqa: E402
from detector.deploy.runtime import load_export  # noqa: E402
from detector.fileio import write_json_atomic  # noqa: E402
from detector.images import read_image  # noqa: E402
from detector.inference.folders import list_inputs  # noqa: E402
from detector.model import load_model  # noqa: E402
from detector.timing import timed_stage  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "runtime"
MACHINE = "2 CPU cores, no GPU"

COLD_PROBE = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np
from detector.images import read_image
if sys.argv[1] == "runtime":
    from detector.deploy.runtime import load_export
    det = load_export(sys.argv[2])
else:
    import detector
    from detector.model import load_model
    det = load_model(sys.argv[2], device="cpu")
t1 = time.perf_counter()
image, windows = read_image(sys.argv[3]), np.load(sys.argv[4])
det.detect(image, windows)
t2 = time.perf_counter()
print(json.dumps({"import_and_load_s": t1 - t0, "first_image_s": t2 - t1, "total_s": t2 - t0,
                  "torch_imported": "torch" in sys.modules}))
"""


def stage_table(samples: list[list[dict]]) -> dict:
    """s/img per stage (and total): median over runs of the mean over images."""
    stages = sorted({k for run in samples for t in run for k in t})
    out = {}
    for stage in stages + ["total"]:
        per_run = [statistics.fmean(sum(t.values()) if stage == "total" else t.get(stage, 0.0) for t in run)
                   for run in samples]
        out[stage] = statistics.median(per_run)
    return out


def compare(want, got) -> dict:
    """Largest differences between two detection sets matched by label and box."""
    out = {"torch_detections": int(len(want.boxes)), "runtime_detections": int(len(got.boxes)),
           "max_box_diff_px": 0.0, "max_score_diff": 0.0}
    free = np.ones(len(got.boxes), bool)
    for box, score, label in zip(want.boxes, want.scores, want.labels):
        diff = np.abs(got.boxes - box).max(axis=1) if len(got.boxes) else np.zeros(0)
        diff[(got.labels != label) | ~free] = np.inf
        if not len(diff) or not np.isfinite(diff.min()):
            out["unmatched"] = out.get("unmatched", 0) + 1
            continue
        j = int(diff.argmin())
        free[j] = False
        out["max_box_diff_px"] = max(out["max_box_diff_px"], float(diff[j]))
        out["max_score_diff"] = max(out["max_score_diff"], float(abs(got.scores[j] - score)))
    out["within_tolerance"] = bool(len(want.boxes) == len(got.boxes) and "unmatched" not in out
                                   and out["max_box_diff_px"] <= 0.01 and out["max_score_diff"] <= 1e-4)
    return out


def cold_start(kind: str, model: Path, image: Path, windows: Path, runs: int) -> dict:
    probes = []
    for _ in range(runs):
        res = subprocess.run([sys.executable, "-c", COLD_PROBE, kind, str(model), str(image), str(windows)],
                             capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
        probes.append(json.loads(res.stdout.strip().splitlines()[-1]))
    out = {k: statistics.median(p[k] for p in probes) for k in ("import_and_load_s", "first_image_s", "total_s")}
    out["torch_imported"] = any(p["torch_imported"] for p in probes)
    return out


def versions() -> dict:
    import cv2
    import onnxruntime
    import torch
    return {"python": sys.version.split()[0], "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "numpy": np.__version__, "opencv": cv2.__version__, "platform": platform.platform()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, type=Path, help="model file (exported here to a scratch folder)")
    p.add_argument("--input", required=True, help="images: a folder, glob or list file (as sppnet detect)")
    p.add_argument("--split-file", type=Path, help="keep only the images whose stem is listed (a VOC split)")
    p.add_argument("--images", type=int, default=5, help="the first N images")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--cold-runs", type=int, default=3)
    p.add_argument("--load", type=int, default=0, help="busy-looping background processes during the run")
    p.add_argument("--name", default="", help="record name (default: model folder + condition)")
    p.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()) / "sppnet_bench_runtime")
    args = p.parse_args(argv)

    files = list_inputs(args.input)
    if args.split_file:
        keep = set(args.split_file.read_text().split())
        files = [f for f in files if f.stem in keep]
    files = files[:args.images]
    exports = {"fp32": args.scratch / "fp32", "int8": args.scratch / "int8"}
    for precision, folder in exports.items():
        export_model(args.model, folder, int8=precision == "int8")
    variants = {"torch_fp32": load_model(args.model, device="cpu"),
                "torch_int8": load_model(args.model, device="cpu", overrides=["test.fc_compression=int8"]),
                "runtime_fp32": load_export(exports["fp32"]), "runtime_int8": load_export(exports["int8"])}
    condition = f"loaded (+{args.load} busy processes)" if args.load else "as found (no added load)"
    record = {"command": "python -m bench.runtime " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": MACHINE, "condition": condition, "load_1min_before": os.getloadavg()[0],
              "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "versions": versions(),
              "model": str(args.model), "images": [str(f) for f in files], "runs": args.runs}
    load = background_load(args.load) if args.load else contextlib.nullcontext()
    with load:
        images, windows, search = [], [], []
        for f in files:
            image = read_image(f)
            t = {}
            with timed_stage(t, "proposals"):
                windows.append(variants["torch_fp32"].propose(image))
            images.append(image)
            search.append(t["proposals"])
        record["windows_per_image"] = statistics.fmean(len(w) for w in windows)
        record["proposals_s_per_img"] = statistics.fmean(search)
        samples = {name: [] for name in variants}
        threads = {name: collections.Counter() for name in variants}
        for _ in range(args.runs):
            for name in variants:
                samples[name].append([])
            for image, win in zip(images, windows):
                for name, det in variants.items():
                    # The automatic thread choice reads the load per call: the
                    # count read just before a call says what that call got.
                    threads[name][det.network_threads()] += 1
                    t = {}
                    det.detect(image, win, timings=t)
                    samples[name][-1].append(t)
        record["warm_s_per_img"] = {name: stage_table(s) for name, s in samples.items()}
        record["network_threads_chosen"] = {name: {str(k): v for k, v in sorted(c.items())}
                                            for name, c in threads.items()}
        record["equality_fp32"] = [compare(variants["torch_fp32"].detect(im, w), variants["runtime_fp32"].detect(im, w))
                                   for im, w in zip(images, windows)]
        with tempfile.TemporaryDirectory() as tmp:
            np.save(Path(tmp) / "w.npy", windows[0])
            record["cold_start"] = {kind: cold_start(kind, model, files[0], Path(tmp) / "w.npy", args.cold_runs)
                                    for kind, model in (("torch", args.model), ("runtime", exports["fp32"]))}
    record["load_1min_after"] = os.getloadavg()[0]
    name = args.name or f"{args.model.parent.name}_{'load' + str(args.load) if args.load else 'as_found'}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json_atomic(RESULTS / f"{name}.json", record)
    print(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
