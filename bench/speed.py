"""Test-time speed, quiet and under a bounded background load, with how it was taken.

Every figure is measured twice: "quiet" (after waiting, up to ``--wait-quiet``
seconds, for the 1-minute load average to drop below ``--quiet-load``; the
load seen is recorded) and "loaded" (two ``timeout 600 python -c 'while 1:
pass'`` processes started here, killed after). Medians of ``--runs`` runs;
"cold" is the first image of a fresh process (a subprocess per run), "warm"
the median over later calls.

Parts (``--only``):

- ``pool``: spatial pyramid pooling of 2000 windows on a fresh random conv5
  map per run (256 x 38 x 50, as bench/pooling.py), with torch's thread count
  as found (the old behaviour) and with the engine's 1 thread;
- ``detect``: ``Detector.detect`` on given windows (BCCD test images, ~2000
  windows each), per stage, for each ``test.fc_compression``; the R-CNN twin
  (the same trained parts with ``mode=rcnn``: timing does not depend on how the
  weights were trained) on the first ``--rcnn-images`` images, interleaved,
  for the side-by-side speed-up;
- ``cold``: the first ``detect`` call of a fresh process;
- ``e2e``: ``detect_files`` end to end, proposals included, on the first
  ``--e2e-images`` raccoon test images and on ../shared/data/photos resized
  to 500 x 375: pipelined, sequential (``pipeline=False``), pipelined with
  int8 fc layers (``test.fc_compression=int8``) and with int8 plus the
  search at 400 px (``proposals.max_side=400``), and with ``--baseline-src``
  (a checkout of the code before this change) the old code.

Run: python -m bench.speed --bccd-model runs/bccd/model.pt --raccoon-model runs/raccoon/model.pt
Writes bench/results/speed.json (and prints it).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from detector.build import build_dataset, build_detector  # noqa: E402
from detector.fileio import write_json_atomic  # noqa: E402
from detector.images import read_image  # noqa: E402
from detector.model import TrainedModel, load_model, load_trained, read_model_config  # noqa: E402
from detector.features.pyramid import SpatialPyramidPool  # noqa: E402
from detector.threads import POOL_THREADS, limit_threads  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
RESULTS = REPO / "bench" / "results"
PHOTOS = SHARED / "data" / "photos"
KANGAROO_SIZE = (500, 375)  # a typical VOC / kangaroo-set photo
LOAD_PROCESSES = 2
LOAD_SECONDS = 600
COMPRESSIONS = ("none", "svd", "int8", "svd_int8")


@contextlib.contextmanager
def background_load(n: int = LOAD_PROCESSES, seconds: float = LOAD_SECONDS):
    """``n`` busy-looping processes (each bounded by ``timeout`` at ``seconds``), killed on exit."""
    procs = [subprocess.Popen(["timeout", str(seconds), sys.executable, "-c", "while 1: pass"])
             for _ in range(n)]
    time.sleep(1.0)
    try:
        yield
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=30)


def wait_quiet(max_wait: float, threshold: float) -> float:
    """Wait (up to ``max_wait`` s) for the 1-minute load to drop below ``threshold``; returns it."""
    deadline = time.time() + max_wait
    while os.getloadavg()[0] >= threshold and time.time() < deadline:
        time.sleep(5)
    return os.getloadavg()[0]


def median(values):
    return statistics.median(values) if values else None


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ---- pool -------------------------------------------------------------------

def bench_pool(runs: int) -> dict:
    from bench.pooling import CHANNELS, HEIGHT, WIDTH, make_cells

    gen = torch.Generator().manual_seed(0)
    spp = SpatialPyramidPool((6, 3, 2, 1))
    found = torch.get_num_threads()
    times = {f"{found}_threads": [], f"{POOL_THREADS}_thread": []}
    with torch.inference_mode():
        for _ in range(runs):
            for label, threads in ((f"{found}_threads", found), (f"{POOL_THREADS}_thread", POOL_THREADS)):
                fmap = torch.rand(CHANNELS, HEIGHT, WIDTH, generator=gen)  # a fresh map, as per image
                cells = make_cells(2000, HEIGHT, WIDTH, gen)
                with limit_threads(threads):
                    times[label].append(timed(lambda: spp(fmap, cells)))
    return {label: {"median_s": median(t), "runs_s": t} for label, t in times.items()}


# ---- detect -----------------------------------------------------------------

def test_images(model_path: Path, n: int):
    """(path, RGB image, windows) of the first ``n`` test images of the model's dataset."""
    cfg = read_model_config(model_path)
    return split_windows(cfg, n, cfg.cache_root())


def split_windows(cfg, n: int, cache_root: Path):
    """(path, RGB image, windows) of the first ``n`` images of ``cfg``'s test split, with
    ``cfg``'s search (computed into, or read from, ``cache_root``/proposals)."""
    from proposals import compute_split

    dataset = build_dataset(cfg.data, cfg.data.test_split)
    records = list(dataset)[:n]
    store = compute_split(records, cfg.proposals, Path(cache_root) / "proposals", dataset.name,
                          cfg.data.test_split, progress=False)
    return [(r.path, read_image(r.path), store.load(r.image_id)) for r in records]


def rcnn_twin(model: TrainedModel):
    """The same trained parts run as R-CNN (warped crops): for timing side by side."""
    det = model.detector
    return build_detector(dataclasses.replace(model.config, mode="rcnn"), det.class_names, det.backbone, det.head,
                          det.svms, det.regressors)


def bench_detect(model_path: Path, images, rcnn_images: int, compressions) -> dict:
    trained = {c: load_trained(model_path, device="cpu", overrides=[f"test.fc_compression={c}"])
               for c in compressions}
    models = {c: m.detector for c, m in trained.items()}
    if rcnn_images:
        models["rcnn"] = rcnn_twin(trained["none"])
    stats = {name: [] for name in models}
    for name, det in models.items():  # warm-up: the first call of each is not timed
        det.detect(images[0][1], images[0][2][:50])
    for index, (_, image, windows) in enumerate(images):
        for name, det in models.items():
            if name == "rcnn" and index >= rcnn_images:
                continue
            t: dict = {}
            t["total"] = timed(lambda: det.detect(image, windows, timings=t))
            stats[name].append(t)
    out = {}
    for name, ts in stats.items():
        keys = sorted({k for t in ts for k in t})
        out[name] = {"images": len(ts), "median_s": {k: median([t.get(k, 0.0) for t in ts]) for k in keys}}
    same = range(min(rcnn_images, len(images)))
    if rcnn_images:
        for name in compressions:
            spp = median([stats[name][i]["total"] for i in same])
            out[name]["speedup_vs_rcnn_same_images"] = median([stats["rcnn"][i]["total"] for i in same]) / spp
    out["windows_per_image"] = [len(w) for _, _, w in images]
    return out


COLD_PROBE = """
import json, sys, time
import detector
t0 = time.perf_counter()
from detector.images import read_image
from detector.model import load_model
import numpy as np
det = load_model(sys.argv[1], device="cpu", overrides=sys.argv[4:])
t1 = time.perf_counter()
image, windows = read_image(sys.argv[2]), np.load(sys.argv[3])
t = {}
start = time.perf_counter()
det.detect(image, windows, timings=t)
first = time.perf_counter() - start
start = time.perf_counter()
det.detect(image, windows)
second = time.perf_counter() - start
print(json.dumps({"import_and_load_s": t1 - t0, "first_detect_s": first, "second_detect_s": second, "stages": t}))
"""


def bench_cold(model_path: Path, image_path: Path, windows: np.ndarray, runs: int, overrides=()) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "w.npy", windows)
        probes = []
        for _ in range(runs):
            res = subprocess.run([sys.executable, "-c", COLD_PROBE, str(model_path), str(image_path),
                                  str(Path(tmp) / "w.npy"), *overrides], capture_output=True, text=True,
                                 env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
            probes.append(json.loads(res.stdout.strip().splitlines()[-1]))
    return {k: median([p[k] for p in probes]) for k in ("import_and_load_s", "first_detect_s", "second_detect_s")}


# ---- end to end --------------------------------------------------------------

def photo_folder(root: Path, copies: int = 1) -> list[Path]:
    """../shared/data/photos resized to 500 x 375 (kangaroo-set-like photos),
    each written ``copies`` times under its own name: a longer folder, whose
    run shows the pipeline's steady state (nothing is cached between files,
    so a copy costs what a new photo of the same content does)."""
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for f in sorted(PHOTOS.iterdir()):
        if f.suffix.lower() not in (".jpg", ".bmp", ".png"):
            continue
        image = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if image is None:
            continue
        small = cv2.resize(image, KANGAROO_SIZE, interpolation=cv2.INTER_AREA)
        for k in range(copies):
            target = root / (f"{f.stem}.jpg" if k == 0 else f"{f.stem}_copy{k}.jpg")
            cv2.imwrite(str(target), small)
            out.append(target)
    return sorted(out)


# Pipelined runs with test-time options (mode -> overrides): int8 fc layers,
# and with them the search on the longer side at 400 px instead of 500
# (raccoon test: the same recall@0.5, 1.000, in two-thirds of the time;
# docs/benchmarks_proposals.md).
E2E_VARIANTS = {"pipelined_int8": ["test.fc_compression=int8"],
                "pipelined_int8_side400": ["test.fc_compression=int8", "proposals.max_side=400"]}


BASELINE_PROBE = """
import sys, time
from pathlib import Path
import detector
from detector.inference.folders import detect_files
from detector.model import load_model
det = load_model(sys.argv[1], device="cpu")
files = [Path(p) for p in sys.argv[3:]]
start = time.perf_counter()
detect_files(det, files, sys.argv[2], progress=False)
print(time.perf_counter() - start)
"""


def bench_e2e(model_path: Path, sets: dict, runs: int, baseline_src: str | None,
              only_modes: list[str] | None = None) -> dict:
    from detector.inference.folders import detect_files

    # mode -> (test-time overrides, pipelined?), for the modes asked for
    plan = {"pipelined": ((), True), "sequential": ((), False),
            **{mode: (tuple(overrides), True) for mode, overrides in E2E_VARIANTS.items()}}
    plan = {mode: p for mode, p in plan.items() if only_modes is None or mode in only_modes}
    # one detector per distinct set of overrides (pipelined and sequential share one)
    loaded = {o: load_model(model_path, device="cpu", overrides=list(o)) for o, _ in plan.values()}
    detectors = {mode: (loaded[o], pipelined) for mode, (o, pipelined) in plan.items()}
    out = {}
    for set_name, files in sets.items():
        modes = {mode: [] for mode in detectors}
        if baseline_src:
            modes["baseline"] = []
        for _ in range(runs):
            for mode in modes:
                with tempfile.TemporaryDirectory() as tmp:
                    if mode == "baseline":
                        res = subprocess.run([sys.executable, "-c", BASELINE_PROBE, str(model_path.resolve()), tmp,
                                              *(str(Path(f).resolve()) for f in files)],
                                             capture_output=True, text=True, check=True,
                                             env={**os.environ, "PYTHONPATH": baseline_src}, cwd=baseline_src)
                        seconds = float(res.stdout.strip().splitlines()[-1])
                    else:
                        model, pipelined = detectors[mode]
                        seconds = timed(lambda: detect_files(model, files, tmp, progress=False,
                                                             pipeline=pipelined))
                modes[mode].append(seconds)
        out[set_name] = {"images": len(files),
                         **{mode: {"median_s": median(t), "img_per_s": len(files) / median(t), "runs_s": t}
                            for mode, t in modes.items()}}
    return out


# ---- main -------------------------------------------------------------------

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Defaults: bench.detection's protocol P (BCCD, ~2000 windows) and full raccoon models.
    p.add_argument("--bccd-model", type=Path, default=REPO / "runs" / "bench" / "bccd" / "paper_spp1_fc7" / "model.pt")
    p.add_argument("--raccoon-model", type=Path, default=REPO / "runs" / "bench" / "raccoon" / "spp1_fc7" / "model.pt")
    p.add_argument("--only", nargs="+", default=["pool", "detect", "cold", "e2e"],
                   choices=["pool", "detect", "cold", "e2e"])
    p.add_argument("--conditions", nargs="+", default=["quiet", "loaded"], choices=["quiet", "loaded"])
    p.add_argument("--runs", type=int, default=5, help="runs per figure (median)")
    p.add_argument("--images", type=int, default=5, help="BCCD test images timed by 'detect'")
    p.add_argument("--rcnn-images", type=int, default=3, help="of those, timed with the R-CNN twin too")
    p.add_argument("--compressions", nargs="+", default=list(COMPRESSIONS), choices=COMPRESSIONS)
    p.add_argument("--e2e-images", type=int, default=16, help="raccoon test images of the folder run")
    p.add_argument("--e2e-photo-copies", type=int, default=1,
                   help="write each photo this many times (a longer folder: the pipeline's steady state)")
    p.add_argument("--e2e-modes", nargs="+", default=None,
                   choices=["pipelined", "sequential", *E2E_VARIANTS],
                   help="folder-run modes to time (default: all)")
    p.add_argument("--e2e-runs", type=int, default=3)
    p.add_argument("--baseline-src", help="a checkout of the old code, timed by 'e2e' as 'baseline'")
    p.add_argument("--wait-quiet", type=float, default=600, help="max seconds to wait for a quiet machine")
    p.add_argument("--quiet-load", type=float, default=0.5, help="1-minute load average counted as quiet")
    p.add_argument("--out", type=Path, default=RESULTS / "speed.json")
    args = p.parse_args(argv)

    out = {"command": " ".join(["python -m bench.speed", *(argv if argv is not None else sys.argv[1:])]),
           "machine": {"cores": len(os.sched_getaffinity(0)), "gpu": torch.cuda.is_available(),
                       "torch": torch.__version__, "torch_threads_found": torch.get_num_threads()},
           "conditions": {}}
    images = test_images(args.bccd_model, args.images) if {"detect", "cold"} & set(args.only) else []
    sets = {}
    if "e2e" in args.only:
        rac = read_model_config(args.raccoon_model)
        sets["raccoon_test"] = [r.path for r in list(build_dataset(rac.data, rac.data.test_split))[:args.e2e_images]]
        copies = args.e2e_photo_copies
        suffix = "" if copies == 1 else f"_x{copies}"
        sets[f"photos_500x375{suffix}"] = photo_folder(REPO / "runs" / f"bench_photos{suffix}", copies)
    for condition in args.conditions:
        load_before = wait_quiet(args.wait_quiet, args.quiet_load) if condition == "quiet" else os.getloadavg()[0]
        ctx = background_load() if condition == "loaded" else contextlib.nullcontext()
        res = {"load_1min_before": load_before, "started": time.strftime("%H:%M:%S", time.gmtime())}
        with ctx:
            if "pool" in args.only:
                res["pool"] = bench_pool(args.runs)
                print(condition, "pool", json.dumps(res["pool"]), flush=True)
            if "detect" in args.only:
                res["detect"] = bench_detect(args.bccd_model, images, args.rcnn_images, args.compressions)
                print(condition, "detect", json.dumps(res["detect"]), flush=True)
            if "cold" in args.only:
                path, _, windows = images[0]
                res["cold"] = {c: bench_cold(args.bccd_model, path, windows, args.runs,
                                             [f"test.fc_compression={c}"]) for c in ("none", "int8")}
                print(condition, "cold", json.dumps(res["cold"]), flush=True)
            if "e2e" in args.only:
                res["e2e"] = bench_e2e(args.raccoon_model, sets, args.e2e_runs, args.baseline_src,
                                       args.e2e_modes)
                print(condition, "e2e", json.dumps(res["e2e"]), flush=True)
        res["load_1min_after"] = os.getloadavg()[0]
        out["conditions"][condition] = res
        write_json_atomic(args.out, out)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
