"""SPP-net against its R-CNN twin: test seconds per image on a trained shipped-config model.

The one measurement behind the speed-up quoted in README.md and docs/. The
twin is the model's own trained parts (trunk, fc6/fc7, SVMs, box regressors)
built with ``mode=rcnn`` (``bench.speed.rcnn_twin``): warped 224 px crops
through the same trunk and the same pyramid, so pool5 and the fc input keep
their size and the twin runs the model's own fc weights (its time does not
depend on how they were trained). Both run on the same first ``--images``
test images and the same windows (the model's search, computed and cached
before any timing: proposals are excluded), for each fc form
(``test.fc_compression``), interleaved image by image in one process; each
method's first call is an untimed warm-up. The speed-up is R-CNN's median
seconds per image over SPP's, per fc form.

    python -m bench.spp_speedup --model runs/base/raccoon/model.pt --config configs/raccoon_mobilenet.yaml

Writes bench/results/spp_speedup/<config name>.json (and prints the summary).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import detector  # noqa: F401  (isort: skip) sets THP_MEM_ALLOC_ENABLE before torch loads

import torch  # noqa: E402

from bench.speed import rcnn_twin, split_windows, timed  # noqa: E402
from detector.commands.entry import run_cli  # noqa: E402
from detector.config import Config, load_detector_config  # noqa: E402
from detector.configio import ConfigError, to_dict  # noqa: E402
from detector.evaluation.report import collect_versions  # noqa: E402
from detector.fileio import file_digest, write_json_atomic  # noqa: E402
from detector.model import load_trained, read_model_config  # noqa: E402
from bench.stamps import utc_now  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "spp_speedup"
METHODS = ("spp", "rcnn")
# Where a trained model may differ from its config file and still be "that
# config": the data's location, run folders, the seed and the device.
NOT_COMPARED = ("data", "workdir", "cache_dir", "seed", "device")
# 1-minute load average below which the machine counts as quiet (bench.speed's threshold).
QUIET_LOAD = 0.5
TWIN_NOTE = ("R-CNN twin: this model's trained trunk, fc6/fc7, SVMs and box regressors built with "
             "mode=rcnn (bench.speed.rcnn_twin): a warped 224 px crop with 16 px context per window "
             "through the same trunk and pyramid, so the fc input keeps its size and the twin runs "
             "this model's own fc weights; no R-CNN model was trained for it (test time does not "
             "depend on the weights).")


class ModelConfigMismatch(ConfigError):
    """The model was not trained with the config file it is measured as."""


# Paths compared by the file they name (a config's relative path and a command line's
# absolute one name the same weights).
SAME_FILE = {("backbone", "weights")}


def _same(section: str, key: str, x, y) -> bool:
    if x == y:
        return True
    if (section, key) in SAME_FILE and isinstance(x, str) and isinstance(y, str):
        return Path(x).resolve() == Path(y).resolve()
    return False


def check_trained_with(model_cfg: Config, file_cfg: Config, model: Path, config: Path) -> None:
    """Raise unless ``model_cfg`` equals ``file_cfg`` outside :data:`NOT_COMPARED` (the weights
    file by the file it resolves to)."""
    a, b = to_dict(model_cfg), to_dict(file_cfg)
    differ = []
    for section in sorted(set(a) - set(NOT_COMPARED)):
        if isinstance(a[section], dict):
            differ += [f"{section}.{k}: {a[section][k]!r} (model) vs {b[section].get(k)!r} (config)"
                       for k in sorted(a[section]) if not _same(section, k, a[section][k], b[section].get(k))]
        elif a[section] != b[section]:
            differ.append(f"{section}: {a[section]!r} (model) vs {b[section]!r} (config)")
    if differ:
        raise ModelConfigMismatch(f"{model}: not trained with {config}: " + "; ".join(differ))


def summarise(seconds: dict[str, dict[str, list[float]]]) -> dict:
    """Medians and speed-ups of ``seconds[method][fc form]`` (per-image totals, same images).

    ``speedup`` is R-CNN's median over SPP's; ``speedup_per_image`` the median
    of the image-by-image ratios (a check that one slow image does not make it).
    """
    medians = {m: {fc: statistics.median(ts) for fc, ts in by_fc.items()} for m, by_fc in seconds.items()}
    forms = medians["spp"]
    return {"median_s_per_image": medians,
            "speedup": {fc: medians["rcnn"][fc] / medians["spp"][fc] for fc in forms},
            "speedup_per_image": {fc: statistics.median(r / s for r, s in zip(seconds["rcnn"][fc],
                                                                               seconds["spp"][fc]))
                                  for fc in forms}}


def condition(load_before: float, load_after: float) -> str:
    """"quiet" or "under load", from the 1-minute load averages around the run."""
    if max(load_before, load_after) < QUIET_LOAD:
        return "quiet"
    return (f"under load (1-minute load {load_before:.1f} before, {load_after:.1f} after: other jobs "
            "shared the cores)")


def measure(model: Path, compressions: list[str], images, overrides: list[str]) -> dict:
    """Per-image seconds (total and per stage) of SPP and its R-CNN twin for each fc form."""
    detectors = {}
    for fc in compressions:
        spp = load_trained(model, device="cpu", overrides=[*overrides, f"test.fc_compression={fc}"])
        detectors[("spp", fc)], detectors[("rcnn", fc)] = spp.detector, rcnn_twin(spp)
    for det in detectors.values():  # warm-up, not timed
        det.detect(images[0][1], images[0][2][:50])
    totals = {m: {fc: [] for fc in compressions} for m in METHODS}
    stages = {m: {fc: [] for fc in compressions} for m in METHODS}
    for _, image, windows in images:
        for (method, fc), det in detectors.items():
            t: dict = {}
            totals[method][fc].append(timed(lambda: det.detect(image, windows, timings=t)))
            stages[method][fc].append(t)
    stage_medians = {m: {fc: {k: statistics.median(t[k] for t in ts) for k in ts[0]}
                         for fc, ts in by_fc.items()} for m, by_fc in stages.items()}
    return {"seconds_per_image": totals, "stage_median_s": stage_medians}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True, help="a model trained with --config")
    p.add_argument("--config", type=Path, required=True, help="the shipped config it was trained with")
    p.add_argument("--images", type=int, default=5, help="first N test images, timed by both methods")
    p.add_argument("--compressions", nargs="+", default=["none", "int8"],
                   choices=["none", "svd", "int8", "svd_int8"], help="fc forms (test.fc_compression)")
    p.add_argument("--cache", type=Path, required=True, help="folder for the test images' proposal cache")
    p.add_argument("--out", type=Path, help="record (default bench/results/spp_speedup/<config name>.json)")
    p.add_argument("overrides", nargs="*", help="test-time key=value, e.g. data.root=/data/raccoon")
    args = p.parse_args(argv)
    if args.images < 1:
        raise ValueError(f"--images {args.images}: at least 1 image is needed")
    model_cfg = read_model_config(args.model, args.overrides)  # the model file's provenance
    check_trained_with(model_cfg, load_detector_config(args.config, args.overrides), args.model, args.config)
    images = split_windows(model_cfg, args.images, args.cache)
    if len(images) < args.images:
        raise ValueError(f"{model_cfg.data.root}: the {model_cfg.data.test_split} split has {len(images)} "
                         f"images, --images asks for {args.images}")

    load_before, started = os.getloadavg()[0], utc_now()
    timings = measure(args.model, args.compressions, images, args.overrides)
    load_after = os.getloadavg()[0]
    record = {
        "command": " ".join(["python -m bench.spp_speedup", *(argv if argv is not None else sys.argv[1:])]),
        "config": str(args.config), "model": str(args.model), "model_digest": file_digest(args.model),
        "machine": f"{len(os.sched_getaffinity(0))} CPU cores, "
                   f"{'a GPU present (not used: device cpu)' if torch.cuda.is_available() else 'no GPU'}",
        "started": started, "condition": condition(load_before, load_after),
        "load_1min_before": load_before, "load_1min_after": load_after, "versions": collect_versions(),
        "proposals": "excluded: computed and cached before timing",
        "images": [Path(path).name for path, _, _ in images],
        "windows_per_image": [len(w) for _, _, w in images],
        "rcnn_twin": TWIN_NOTE, **summarise(timings["seconds_per_image"]), **timings,
    }
    out = args.out or RESULTS / f"{args.config.stem}.json"
    write_json_atomic(out, record)
    for fc in args.compressions:
        print(f"fc {fc}: SPP {record['median_s_per_image']['spp'][fc]:.3f} s/img, R-CNN "
              f"{record['median_s_per_image']['rcnn'][fc]:.2f} s/img, SPP {record['speedup'][fc]:.0f}x "
              f"faster ({len(images)} images, median {statistics.median(record['windows_per_image']):.0f} "
              f"windows; {record['condition']})")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
