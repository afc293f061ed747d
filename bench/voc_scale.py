"""A VOC 2007-sized run, measured: time, peak memory and disk per stage as trainval grows.

A generated VOC 2007-shaped set (``detector/data/voc_like.py``: ~500 x 375
images, 20 classes, ~2.4 objects per image, ~23% with several classes)
is trained with ``configs/voc2007_mobilenet.yaml`` (ImageNet MobileNetV2 from
../shared/weights, 1 scale) on nested trainval sets of ``--sizes`` images
(the first N; one split name, so one proposal store) and tested on one fixed
test split (by default after the largest size only: test time per image does
not depend on the training size).

Each size runs in its own process (``run --train N``), so its peak memory is
its own. Every size shares one cache root: the proposals and conv5 maps of
the images a smaller size already computed are reused (content-keyed), so
the "proposals" and "conv5_cache" stages are timed on the new images only;
the record says how many entries each stage computed. Fine-tuning, SVMs,
box regression and the pooling pass always run on all images (own workdir).

Memory: the resident set of this process plus the proportional set size of
its children (proposal workers), sampled every 0.5 s by a background thread
and kept per stage (``detector.timing``'s stage listener names the stage);
disk: the size of each cache folder after the run.

``--background clutter`` runs the same on the VOC-density set (issue 29:
the generator's cluttered background, where selective search finds ~2000
windows per image, the count R-CNN and SPP-net report on VOC photos, against
~450 on the plain one): its own
data, caches and workdirs under runs/voc_like_dense/ and its records under
bench/results/voc_scale/clutter/, so the plain runs and their report stay as
they are. Every record says its background and the windows per image that
run's proposal store holds.

Run:   python -m bench.voc_scale all --sizes 500 1000 2000 --test 200 [--iterations N] [key=value ...]
       python -m bench.voc_scale all --background clutter --sizes 2500 5011 --test 200 [key=value ...]
Table: python -m bench.voc_scale report   (writes docs/voc2007_scaling.md and its figure)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.stamps import utc_now

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
RUNS = REPO / "runs" / "voc_like"
RESULTS = REPO / "bench" / "results" / "voc_scale"
DOC = REPO / "docs" / "voc2007_scaling.md"
FIGURE = REPO / "docs" / "voc2007_scaling.png"
CONFIG = REPO / "configs" / "voc2007_mobilenet.yaml"
# VOC 2007 itself, for the projection.
VOC_TRAINVAL, VOC_TEST = 5011, 4952
POOL_SIZE = 2000  # trainval images generated; sizes take the first N


@dataclass(frozen=True)
class Setup:
    """Where one background's runs live: its generated data, caches, workdirs and records."""

    background: str  # detector.data.voc_like.BACKGROUNDS
    runs: Path
    results: Path

    @property
    def data(self) -> Path:
        return self.runs / "data"


def setup_for(background: str) -> Setup:
    if background == "plain":  # the folders of the runs measured before the clutter option
        return Setup(background, RUNS, RESULTS)
    return Setup(background, REPO / "runs" / "voc_like_dense", RESULTS / background)


def overrides(setup: Setup, n: int, iterations: int, extra: list[str]) -> list[str]:
    from detector.data.voc_like import VOC_LIKE_CLASSES

    return [f"data.root={setup.data}", f"data.train_split={SPLIT}", "data.test_split=test",
            f"data.class_names=[{','.join(VOC_LIKE_CLASSES)}]",
            f"backbone.weights={SHARED / 'weights' / 'mobilenet_v2_imagenet.pth'}",
            "backbone.preprocess=inception", f"finetune.iterations={iterations}",
            f"workdir={setup.runs / f'train{n}'}", f"cache_dir={setup.runs / 'cache'}", *extra]


SPLIT = "train_scaling"  # every size trains on this split file, rewritten to its first N ids


def make_data(setup: Setup, sizes: list[int], num_test: int) -> None:
    """The pool of generated images (trainval: the first max(sizes, POOL_SIZE), test: the next ``num_test``)."""
    from detector.data.voc_like import make_voc_like

    make_voc_like(setup.data, max(max(sizes), POOL_SIZE), num_test, seed=0, progress=True,
                  background=setup.background)


def use_first(setup: Setup, n: int) -> None:
    """Point the scaling split at the first ``n`` trainval images. One split name for every
    size keeps one proposal store, so a size computes the proposals of its new images only."""
    from detector.fileio import write_text_atomic

    ids = (setup.data / "ImageSets/Main/trainval.txt").read_text().split()
    if len(ids) < n:
        raise SystemExit(f"{setup.data} has {len(ids)} trainval images, fewer than {n}")
    write_text_atomic(setup.data / f"ImageSets/Main/{SPLIT}.txt", "".join(i + "\n" for i in ids[:n]))


def process_tree_bytes(pid: int) -> int:
    """Resident bytes of ``pid`` (RSS, from statm: cheap) plus the proportional set size of
    its descendants (proposal workers, the forkserver), whose shared pages then count once.

    (PSS of the main process itself would need a walk of its page tables:
    ~30 ms at 3 GB, enough to slow what is measured; its RSS is within a few
    MB of its PSS here, as little is shared with the workers.)
    """
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    with open(f"/proc/{pid}/statm") as f:
        total = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    todo = list(children.get(pid, []))
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except (OSError, IndexError, ValueError):
            pass
    return total


class MemorySampler:
    """Peak memory of this process tree (:func:`process_tree_bytes`) per outermost timed stage,
    sampled every 0.5 s by a background thread.

    Stages nest (the SVM stage's per-image "conv"/"pool" timers): memory is
    kept under the outermost one. The listener only pushes and pops stage
    names (no sampling on the measured thread). ``phase`` (e.g. "test"), when
    set, takes every sample.
    """

    def __init__(self, period: float = 0.5):
        self.period = period
        self.stack: list[str] = []
        self.phase = ""
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def stage(self) -> str:
        stack = list(self.stack)  # a snapshot: the measured thread pushes and pops meanwhile
        return self.phase or (stack[0] if stack else "other")

    def listener(self, stage: str, event: str) -> None:
        if event == "start":
            self.stack.append(stage)
        elif self.stack:
            self.stack.pop()

    def sample(self) -> None:
        stage = self.stage  # the stage when sampling started
        pss = process_tree_bytes(os.getpid())
        self.peaks[stage] = max(self.peaks.get(stage, 0), pss)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.sample()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()


class StageParts:
    """A run split across processes (issue 29: a size too long for one go resumes).

    Each time this process finishes an outermost stage, ``path`` gets this part:
    the seconds of every stage it finished (nested ones too: the frozen-prefix cache
    inside fine-tuning), the outermost ones' seconds, the peak memory so far per
    stage and the cache entries computed so far. A killed run so leaves its part
    (a stage it was inside is not in it: that stage runs again); the run that
    resumes it (same ``key``: iterations and overrides) reads the earlier parts and
    :meth:`merged` adds them into its record. ``listener`` wraps the memory
    sampler's (one stage stack for both).
    """

    def __init__(self, path: Path, memory: "MemorySampler", cache: Path, before: dict[str, int], key: dict):
        self.path, self.memory, self.cache, self.before, self.key = path, memory, cache, before, key
        self.earlier: list[dict] = []
        if path.exists():
            saved = json.loads(path.read_text())
            if saved.get("key") != key:
                raise SystemExit(f"{path} holds the parts of a run with other settings ({saved.get('key')}); "
                                 "rerun with those, or remove it to start this size afresh")
            self.earlier = saved["parts"]
        self.started = utc_now()
        self.finished: dict[str, float] = {}  # every stage finished, nested ones included
        self.outermost: dict[str, float] = {}
        self._starts: list[float] = []

    def listener(self, stage: str, event: str) -> None:
        self.memory.listener(stage, event)
        if self.memory.phase:  # testing: not a training stage
            return
        if event == "start":
            self._starts.append(time.perf_counter())
            return
        if not self._starts:
            return
        seconds = time.perf_counter() - self._starts.pop()
        if sys.exc_info()[0] is not None:  # the stage raised (Ctrl-C): not finished, it runs again
            return
        self.finished[stage] = self.finished.get(stage, 0.0) + seconds
        if not self._starts:  # an outermost stage ended: this part so far, on disk
            from detector.fileio import write_json_atomic

            self.outermost[stage] = self.outermost.get(stage, 0.0) + seconds
            write_json_atomic(self.path, {"key": self.key,
                                          "parts": self.earlier + [self.part(count_entries(self.cache))]})

    def part(self, after: dict[str, int]) -> dict:
        return {"started": self.started, "stages_s": dict(self.finished), "outermost_s": dict(self.outermost),
                "peak_memory_mb": {k: v / 2**20 for k, v in self.memory.peaks.items()},
                "computed_entries": {k: after[k] - self.before.get(k, 0) for k in after}}

    def merged(self, timings: dict[str, float], wall: float, after: dict[str, int]) -> dict:
        """This process's figures plus the earlier parts': seconds and computed entries summed
        per stage, peak memory the largest per stage; ``parts`` lists every part."""
        parts = self.earlier + [self.part(after)]
        timings, computed, peaks = dict(timings), dict(parts[-1]["computed_entries"]), {}
        for part in self.earlier:
            for stage, secs in part["stages_s"].items():
                timings[stage] = timings.get(stage, 0.0) + secs
            timings["total"] = timings.get("total", 0.0) + sum(part["outermost_s"].values())
            wall += sum(part["outermost_s"].values())
            for k, v in part["computed_entries"].items():
                computed[k] = computed.get(k, 0) + v
        for part in parts:
            for stage, mb in part["peak_memory_mb"].items():
                peaks[stage] = max(peaks.get(stage, 0.0), mb)
        return {"timings_s": timings, "train_wall_s": wall, "computed_entries": computed,
                "peak_memory_mb": peaks, "peak_memory_gib": max(peaks.values()) / 1024, "parts": parts,
                "stages_from_earlier_parts": sorted({s for p in self.earlier for s in p["stages_s"]})}


def dir_bytes(path: Path) -> int:
    from detector.fileio import dir_size_bytes

    return dir_size_bytes(path, "**/*") if path.exists() else 0


def count_entries(cache: Path) -> dict[str, int]:
    """Entries in the training split's proposal store and in the conv5 cache (what a run
    computed: after - before; the test split's proposals are not counted)."""
    return {"proposals": sum(1 for p in (cache / "proposals").glob(f"*/{SPLIT}/*/*.npz") if p.name != "all.npz"),
            "conv5": sum(1 for _ in (cache / "conv5").rglob("*.npz")),
            "prefix": sum(1 for _ in (cache / "prefix").rglob("*.npz"))}


def cache_costs(setup: Setup, n: int) -> dict:
    """Selective search on the set, from its proposal stores (each entry keeps its own search
    seconds, one core): windows and seconds per image of the first ``n`` trainval images and
    of the test split; and the disk each cache folder holds now. Written to ``caches.json``
    beside the runs' records: the runs read proposals prefilled by ``sppnet propose``, so
    their own proposal stage is not the search."""
    from detector.config import load_detector_config
    from detector.data import load_dataset
    from proposals import summarize_store
    from proposals.store import ProposalStore

    cfg = load_detector_config(CONFIG, overrides(setup, n, 0, []))
    from proposals.compute import resolve_workers

    out = {"background": setup.background, "trainval_images": n, "method": cfg.proposals.method,
           "workers": resolve_workers(None, cfg.proposals, n)}  # as `sppnet propose` resolves them here
    trainval = (setup.data / "ImageSets/Main/trainval.txt").read_text().split()[:n]
    for name, split, ids in (("trainval", SPLIT, trainval), ("test", "test", None)):
        dataset = load_dataset(cfg.data.root, split)
        store = ProposalStore.open(cfg.cache_root() / "proposals", dataset.name, split, cfg.proposals)
        out[name] = summarize_store(store, ids if ids is not None else [r.image_id for r in dataset])
    cache = cfg.cache_root()
    out["disk_mb"] = {f"{d}_cache": dir_bytes(cache / d) / 2**20 for d in ("proposals", "prefix", "conv5")}
    out["entries"] = count_entries(cache)
    return out


def run_size(setup: Setup, n: int, iterations: int, extra: list[str], test: bool, tag: str = "") -> dict:
    """Train (and test) on the first ``n`` trainval images in this process; write the record.

    Besides the per-stage figures, the record holds the run's headline:
    ``trainval_images``, ``records`` (with mirrors when data.flip),
    ``windows_per_image`` (the mean over the trainval images' entries in this
    run's proposal store), ``peak_memory_gib`` (the largest sample of any
    stage, test included) and ``timings_s`` (seconds per stage).
    """
    from detector.config import load_detector_config
    from detector.evaluation.report import collect_versions
    from detector.fileio import write_json_atomic
    from detector.model import load_trained
    from detector.inference.split_test import EvaluationOptions, run_model_test
    from detector.timing import stage_listener
    from detector.training.train import train

    use_first(setup, n)
    cfg = load_detector_config(CONFIG, overrides(setup, n, iterations, extra))
    cache = cfg.cache_root()
    before = count_entries(cache)
    start = time.perf_counter()
    partial = setup.results / f"train{n}{tag}.partial.json"
    with MemorySampler() as memory:
        parts = StageParts(partial, memory, cache, before, {"iterations": iterations,
                                                            "overrides": overrides(setup, n, iterations, extra)})
        with stage_listener(parts.listener):
            trained = train(cfg)
            train_seconds = time.perf_counter() - start
            outcome = None
            if test:
                model = load_trained(trained.model_path, device="cpu")
                t = time.perf_counter()
                memory.phase = "test"
                outcome = run_model_test(model, EvaluationOptions(cfg.data.test_split, Path(cfg.workdir) / "test",
                                                                  cache_dir=cache))
                test_seconds = time.perf_counter() - t
    record = {
        "background": setup.background, "trainval_images": trained.train_images,
        "records": trained.train_images * (2 if cfg.data.flip else 1),
        "windows_per_image": trained.windows_per_train_image,
        "train_images": trained.train_images, "flipped": cfg.data.flip, "finetune_iterations": iterations,
        "overrides": overrides(setup, n, iterations, extra),
        **parts.merged(trained.timings, train_seconds, count_entries(cache)),
        "reused_stages": trained.reused_stages,
        "disk_mb": {"proposals_cache": dir_bytes(cache / "proposals") / 2**20,
                    "conv5_cache": dir_bytes(cache / "conv5") / 2**20,
                    "prefix_cache": dir_bytes(cache / "prefix") / 2**20,
                    "stages": dir_bytes(Path(cfg.workdir) / "stages") / 2**20,
                    "model": trained.model_path.stat().st_size / 2**20},
        "stats": {k: trained.stats.get(k) for k in ("finetune", "svm", "bbox")},
        "windows_per_train_image": trained.windows_per_train_image,
        "versions": collect_versions(), "cpus": os.cpu_count(),
        "load_avg_at_end": os.getloadavg(),
    }
    if outcome is not None:
        record.update(test_images=len(outcome.detections), mAP=outcome.result.mAP,
                      mAP_without_bbox=outcome.without_bbox.mAP if outcome.without_bbox else None,
                      test_seconds_per_image=outcome.seconds_per_image, test_wall_s=test_seconds)
    record["tag"] = tag
    write_json_atomic(setup.results / f"train{n}{tag}.json", record)
    partial.unlink(missing_ok=True)  # its parts are in the record now
    return record


def main(argv=None) -> int:
    from detector.data.voc_like import BACKGROUNDS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("all", "run"):
        p = sub.add_parser(name)
        p.add_argument("--iterations", type=int, default=2000,
                       help="fine-tuning iterations (time per iteration does not depend on N)")
        p.add_argument("--no-test", action="store_true")
        p.add_argument("--tag", default="", help="suffix of the result files (e.g. _flip)")
        p.add_argument("--background", default="plain", choices=BACKGROUNDS,
                       help="the generated set's background (clutter: VOC's window density)")
        p.add_argument("overrides", nargs="*", help="extra key=value config overrides")
    sub.choices["all"].add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000])
    sub.choices["all"].add_argument("--test", type=int, default=200, help="test images")
    sub.choices["all"].add_argument("--test-all", action="store_true",
                                    help="test every size (default: the largest only; test time per "
                                         "image does not depend on the training size)")
    sub.choices["run"].add_argument("--train", type=int, required=True)
    costs = sub.add_parser("caches", help="write caches.json: the search's windows and seconds per image, "
                                          "each cache's disk")
    costs.add_argument("--background", default="clutter", choices=BACKGROUNDS)
    costs.add_argument("--train", type=int, default=VOC_TRAINVAL)
    sub.add_parser("report")
    args = parser.parse_args(argv)
    if args.command == "report":
        from bench.voc_scale_report import write_report

        write_report(RESULTS, DOC, FIGURE)
        return 0
    setup = setup_for(args.background)
    if args.command == "caches":
        from detector.evaluation.report import collect_versions
        from detector.fileio import write_json_atomic

        record = dict(cache_costs(setup, args.train), versions=collect_versions())
        write_json_atomic(setup.results / "caches.json", record)
        print(json.dumps(record, indent=1))
        return 0
    if args.command == "run":
        print(json.dumps(run_size(setup, args.train, args.iterations, args.overrides, not args.no_test,
                                  args.tag), indent=1))
        return 0
    make_data(setup, args.sizes, args.test)
    for n in sorted(args.sizes):
        test = not args.no_test and (args.test_all or n == max(args.sizes))
        cmd = [sys.executable, "-m", "bench.voc_scale", "run", "--train", str(n), "--tag", args.tag,
               "--background", args.background, "--iterations", str(args.iterations),
               *([] if test else ["--no-test"]), *args.overrides]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, cwd=REPO, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
