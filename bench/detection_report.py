"""Turns bench/results/*.json (from bench/detection.py) into docs/benchmarks_detection.md."""
from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from detector.fileio import write_json_atomic, write_text_atomic

# The paper's figures (He et al. 2014, Table 9 / Sec. 4; GPU timings, VOC 2007).
PAPER = {
    "speedup_alexnet": {"1-scale": 64, "5-scale": 24},
    "speedup_zf5": {"1-scale": 102, "5-scale": 38},
    "cache_gb": {"SPP-net": 20, "R-CNN": 200},
    "map": {"R-CNN (AlexNet) ft fc7 + bbox": 58.5, "SPP 1-scale (ZF-5) ft fc7 + bbox": 58.0,
            "SPP 5-scale (ZF-5) ft fc7 + bbox": 59.2},
}
STAGES = ("conv", "pool", "fc", "svm", "bbox", "nms")


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


# Protocols of the SPP-net / R-CNN accuracy comparison (Experiment.protocol) -> description.
PROTOCOLS = {
    "F": "F: every training image, every window of the dataset's default search",
    "FP": "FP: every training image, every window at the paper's density (~2000 per image)",
    "A": "A: first 60 training images, top 100 windows per image",
    "B": "B: first 40 training images, every window of the default search (raccoon; on BCCD it is P)",
    "P": "P: first 40 training images, every window at the paper's density (~2000 per image)",
    "B->P": "B->P: protocol B's models (trained on the default search) tested on P's windows",
    "P->B": "P->B: protocol P's models (trained on the dense windows) tested on B's windows",
    "P512": "P512: protocol P with fc6 and fc7 of 512 units instead of 1024",
}


@dataclass(frozen=True)
class RunSetting:
    """What a run ran with, as its record says: its overrides (bench.detection's, beyond the
    dataset config and the paper trunk), its test windows' overrides, and the experiment whose
    model it tested (cross tests). Runs are seeds of one protocol row only if this is the same."""
    overrides: tuple[str, ...] = ()
    test_overrides: tuple[str, ...] = ()
    trained_as: str | None = None

    @classmethod
    def of_record(cls, record: dict) -> RunSetting:
        # The first seed-0 records predate the test_overrides and trained_as keys.
        return cls(tuple(record.get("overrides") or ()), tuple(record.get("test_overrides") or ()),
                   record.get("trained_as"))


@dataclass(frozen=True)
class ExperimentPlan:
    """What the report needs of bench.detection's experiment list."""
    # Experiment name -> its protocol (the head swap's records name experiments).
    protocols: dict[str, str]
    # (protocol, dataset, method) -> the setting of that protocol row's own runs.
    settings: dict[tuple[str, str, str], RunSetting]
    # Variant experiment -> the page (and anchor) under docs/ that reports it.
    variant_pages: dict[str, str] = field(default_factory=dict)


def split_protocol_runs(runs: list[dict], settings: dict[tuple[str, str, str], RunSetting]
                        ) -> tuple[list[dict], list[dict]]:
    """The runs of the protocol table's rows, and the variants: runs of a protocol whose record
    says they ran with another setting than the row's (another window margin, say). A variant's
    runs are not more seeds of the row, so they are kept out of it (pooled as seeds, the window-margin
    screen's 6 runs would move protocol B's SPP 1-scale mean on raccoon from 71.3 to 67.4)."""
    rows, variants = [], []
    for r in runs:
        if r["protocol"] in PROTOCOLS:
            own = settings.get((r["protocol"], r["dataset"], r["method"])) == RunSetting.of_record(r)
            (rows if own else variants).append(r)
    return rows, variants


def variant_note(variants: list[dict], plan: ExperimentPlan) -> list[str]:
    """One line naming the runs left out of the protocol table, what sets them apart, and where they are read."""
    by_experiment: dict[tuple[str, str], list[dict]] = {}
    for r in variants:
        by_experiment.setdefault((r["dataset"], r["experiment"]), []).append(r)
    parts = []
    for (dataset, experiment), group in by_experiment.items():
        row = plan.settings.get((group[0]["protocol"], dataset, group[0]["method"]), RunSetting())
        extra = [o for o in RunSetting.of_record(group[0]).overrides if o not in row.overrides]
        page = plan.variant_pages.get(experiment)
        where = f"; reported in [{page.split('#')[0]}]({page})" if page else ""
        parts.append(f"{dataset} `{experiment}` ({', '.join(extra) or 'another setting'}; "
                     f"{len(group)} run{'s' if len(group) > 1 else ''}{where})")
    if not parts:
        return []
    return ["Not in this table, as variants of their protocol rather than more of its seeds: "
            + "; ".join(parts) + ". Their runs are in the every-run tables below.", ""]


# Runs whose feature cache is not another run's (the others share the same
# conv5 maps or R-CNN windows), for the cache-per-image table.
OWN_CACHE = {("F", "spp1"), ("F", "spp5"), ("F", "rcnn"), ("F pool5", "spp1"), ("F pool5", "spp5"),
             ("A", "rcnn"), ("P", "rcnn"), ("FP", "rcnn")}
def load_records(results: Path) -> tuple[list[dict], list[dict]]:
    """The detection runs (bench/detection.py run) and SPP-vs-R-CNN speed records (speed) among
    ``results/*.json``, told by their keys: other benchmarks keep their records there too
    (speed_*.json of bench/speed.py, ray_overhead.json), and they are not this report's."""
    runs, speeds = [], []
    for p in sorted(results.glob("*.json")):
        if p.name == "detection.json":
            continue
        d = json.loads(p.read_text())
        if not isinstance(d, dict) or "dataset" not in d:
            continue
        if "speedup_vs_rcnn" in d:
            speeds.append(d)
        elif "experiment" in d:
            runs.append(d)
    return runs, speeds


def _mean_range(values: list[float]) -> str:
    """Mean over seeds in %, with the range when there is more than one seed."""
    values = [100 * v for v in values if v is not None]
    if not values:
        return "n/a"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.1f}"
    return f"{mean:.1f} ({min(values):.1f}-{max(values):.1f}, {len(values)} seeds)"


def protocol_table(runs: list[dict]) -> list[str]:
    """SPP-net against R-CNN per protocol and dataset: mean mAP over seeds, and the difference.

    ``runs``: the protocol rows' own runs (:func:`split_protocol_runs`), every run of a
    (protocol, dataset, method) a seed of its row."""
    lines = ["| protocol | dataset | method | mAP fc7+SVM+bbox | mAP fc7+SVM | SPP 1-scale minus R-CNN (+bbox / without) |",
             "|---|---|---|---|---|---|"]
    for protocol, description in PROTOCOLS.items():
        for dataset in sorted({r["dataset"] for r in runs}):
            group = {m: [r for r in runs if r["dataset"] == dataset and r["protocol"] == protocol
                         and r["method"] == m] for m in ("spp1", "spp5", "rcnn")}
            if not group["rcnn"]:
                continue
            means = {m: (sum(r["mAP"] for r in g) / len(g),
                         sum(r["mAP_without_bbox"] for r in g) / len(g)) for m, g in group.items() if g}
            for m, label in (("spp1", "SPP 1-scale"), ("spp5", "SPP 5-scale"), ("rcnn", "R-CNN")):
                if not group[m]:
                    continue
                diff = ""
                if m == "spp1":
                    d_box, d_plain = (100 * (a - b) for a, b in zip(means["spp1"], means["rcnn"]))
                    diff = f"**{d_box:+.1f} / {d_plain:+.1f}**"
                lines.append(f"| {description.split(':')[0]} | {dataset} | {label} | "
                             f"{_mean_range([r['mAP'] for r in group[m]])} | "
                             f"{_mean_range([r['mAP_without_bbox'] for r in group[m]])} | {diff} |")
    return lines


def head_swap_table(runs: list[dict], swaps: list[dict], protocols: dict[str, str]) -> list[str]:
    """Raccoon SPP 1-scale: fc head and SVM windows from protocol B or P, tested on both windows.

    The plain and crossed runs come from ``runs`` (the protocol rows' own, as in
    :func:`protocol_table`: a variant's seed would replace the row's); the swapped heads from
    ``bench/head_swap.py`` (``swaps``), whose experiments ``protocols`` maps to
    their window protocol (bench.detection's experiments). Cells: mean over seeds (range).
    """
    spp = {(r["protocol"], r.get("seed", 0)): r for r in runs
           if r["dataset"] == "raccoon" and r["method"] == "spp1"}
    # (head, SVM windows, test windows) of the plain and crossed runs, by protocol.
    cells = {("B", "B", "B"): "B", ("B", "B", "P"): "B->P", ("P", "P", "P"): "P", ("P", "P", "B"): "P->B"}
    values: dict[tuple, list[tuple[float, float]]] = {}
    for (head, svm, test), protocol in cells.items():
        values[head, svm, test] = [(r["mAP"], r["mAP_without_bbox"]) for (p, _), r in sorted(spp.items())
                                   if p == protocol]
    for s in swaps:
        head, svm = protocols[s["head_from"]], protocols[s["svm_windows_from"]]
        for test in ("B", "P"):
            values.setdefault((head, svm, test), []).append((s[f"test_{test}"]["mAP"],
                                                             s[f"test_{test}"]["mAP_without_bbox"]))
    lines = ["| fc head fine-tuned on | SVMs trained on | tested on B's windows (+bbox; without) | "
             "tested on P's windows (+bbox; without) |", "|---|---|---|---|"]
    for head, svm in (("B", "B"), ("B", "P"), ("P", "B"), ("P", "P")):
        row = []
        for test in ("B", "P"):
            v = values.get((head, svm, test), [])
            row.append(f"{_mean_range([a for a, _ in v])}; {_mean_range([b for _, b in v])}" if v else "not run")
        lines.append(f"| {head}'s windows | {svm}'s windows | {row[0]} | {row[1]} |")
    return lines


def fp_type_table(analysis: dict) -> list[str]:
    """False positives by kind ranked above a recall level, per run (``bench/fp_types.py``)."""
    kinds = list(analysis["runs"][0]["false_positives"]) if analysis["runs"] else []
    lines = ["| run | true positives | " + " | ".join(kinds) + " |", "|---|---|" + "---|" * len(kinds)]
    for r in analysis["runs"]:
        lines.append(f"| {r['run']} | {r['true_positives']} of {r['ground_truth']} | "
                     + " | ".join(str(r["false_positives"][k]) for k in kinds) + " |")
    return lines


def accuracy_table(runs: list[dict]) -> list[str]:
    lines = ["| dataset | experiment | seed | train imgs | mAP (VOC07) | mAP without bbox | "
             "test s/img (excl. proposals) |", "|---|---|---|---|---|---|---|"]
    for r in runs:
        cached = " (R-CNN features from its test cache)" if r.get("rcnn_test_features_cached") else ""
        lines.append(f"| {r['dataset']} | {r['label']} | {r.get('seed', 0)} | {r['train_images']} | "
                     f"{_pct(r['mAP'])} | {_pct(r.get('mAP_without_bbox'))} | "
                     f"{r['test_seconds_per_image']['total_excluding_proposals']:.3f}{cached} |")
    return lines


def stage_table(runs: list[dict]) -> list[str]:
    lines = ["| dataset | experiment | " + " | ".join(STAGES) + " | proposals (cache read) |",
             "|---|---|" + "---|" * (len(STAGES) + 1)]
    for r in runs:
        t = r["test_seconds_per_image"]
        lines.append(f"| {r['dataset']} | {r.get('run', r['experiment'])} | "
                     + " | ".join(f"{t.get(s, 0):.4f}" for s in STAGES)
                     + f" | {t.get('proposals_incl_cache_io', 0):.4f} |")
    return lines


def training_table(runs: list[dict]) -> list[str]:
    keys = ("proposals", "conv5_cache", "pool_training_windows", "finetune", "svm", "bbox", "total")
    lines = ["| dataset | experiment | " + " | ".join(keys) + " | feature cache (MB) |",
             "|---|---|" + "---|" * (len(keys) + 1)]
    for r in runs:
        t = r["train_timings_s"]
        cache = r.get("feature_cache_bytes") or 0
        lines.append(f"| {r['dataset']} | {r.get('run', r['experiment'])} | "
                     + " | ".join(f"{t.get(k, 0):.0f}" for k in keys)
                     + f" | {cache / 2**20:.0f} |")
    return lines


def cache_table(runs: list[dict]) -> list[str]:
    """conv5 maps per image (SPP) against pool5 per window (R-CNN), extrapolated to 2000 windows."""
    lines = ["| dataset | experiment | MB per training image | at 2000 windows per image |", "|---|---|---|---|"]
    for r in runs:
        if (not r.get("feature_cache_bytes") or r.get("seed", 0) != 0 or r.get("trained_as")
                or (r["protocol"], r["method"]) not in OWN_CACHE):
            continue
        per_image = r["feature_cache_bytes"] / r["train_images"] / 2**20
        if r["method"] == "rcnn":
            capped = [o for o in r["overrides"] if o.startswith("proposals.max_windows")]
            windows = int(capped[0].split("=")[1]) if capped else r.get("windows_per_train_image")
            if not windows:
                continue
            at_2000 = f"{per_image * 2000 / windows:.1f} (measured at {windows:.0f}; grows with windows)"
        else:
            at_2000 = f"{per_image:.2f} (independent of windows)"
        lines.append(f"| {r['dataset']} | {r['experiment']} | {per_image:.2f} | {at_2000} |")
    return lines


SPEED_SETTINGS = {"paper_fc512": "paper, fc6/fc7 of 512 (both methods)"}


def speed_table(speeds: list[dict]) -> list[str]:
    lines = ["| dataset | windows | images | windows/img | SPP 1-scale s/img | SPP 5-scale s/img | R-CNN s/img | "
             "speed-up 1-scale (paper: 64x AlexNet, 102x ZF-5) | speed-up 5-scale (paper: 24x, 38x) | "
             "conv-only speed-up 1-scale / 5-scale |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s in speeds:
        m = s["median_seconds"]
        w = s["windows_per_image"]

        def total(role):
            return f"{m[role]['total']:.3f}" if role in m else "not run"

        def ratio(key, role):
            return f"{s[key][role]:.0f}x" if role in s[key] else "not run"

        setting = (SPEED_SETTINGS.get(s["windows"], s["windows"])
                   + (f" ({', '.join(s['proposal_overrides'])})" if s.get("proposal_overrides") else ""))
        lines.append(
            f"| {s['dataset']} | {setting} | {s['images']} | {min(w)}-{max(w)} (median {statistics.median(w):.0f}) | "
            f"{total('spp1')} | "
            f"{total('spp5')} | {m['rcnn']['total']:.2f} | "
            f"**{ratio('speedup_vs_rcnn', 'spp1')}** | **{ratio('speedup_vs_rcnn', 'spp5')}** | "
            f"{ratio('conv_speedup_vs_rcnn', 'spp1')} / {ratio('conv_speedup_vs_rcnn', 'spp5')} |")
    return lines


def write_detection_report(results: Path, out_md: Path, versions: dict, plan: ExperimentPlan) -> None:
    runs, speeds = load_records(results)
    protocol_runs, variants = split_protocol_runs(runs, plan.settings)
    swap_file = results / "swap" / "raccoon_head_swap.json"
    swaps = json.loads(swap_file.read_text())["runs"] if swap_file.exists() else []
    fp_file = results / "analysis" / "raccoon_fp_types.json"
    fp_analysis = json.loads(fp_file.read_text()) if fp_file.exists() else None
    write_json_atomic(results / "detection.json", {"runs": runs, "speed": speeds, "paper": PAPER,
                                                   "versions": versions})
    body = [
        "# Detection benchmarks (generated by `bench/detection.py report`)", "",
        "Machine: 2 CPU cores, no GPU. Backbone: ImageNet MobileNetV2 (`../shared/weights`), "
        "features[:14], stride 16, 96 channels; pool5 = 50 bins x 96 = 4800 values.",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if k != "platform"), "",
        "## SPP-net against R-CNN: accuracy on the same protocol", "",
        "Both methods on the same backbone, training images, windows, fc sizes, SVM and box-regression "
        "settings, tested on the whole test split. Protocols (R-CNN on every window of every BCCD training "
        "image would take hours on 2 cores; on raccoon, F is that full protocol):", "",
        *[f"- {d}" for d in PROTOCOLS.values()], "",
        *protocol_table(protocol_runs), "",
        "Where several seeds ran (the seed drives fine-tuning; SVMs and box regression are deterministic "
        "given the features), the mean is shown with the range.", "",
        *variant_note(variants, plan),
        *(["### Raccoon, SPP 1-scale: which stage do denser windows change?", "",
           "The fc head fine-tuned under protocol B (~1000 windows per training image) or P (~1900), "
           "the SVMs trained on B's or P's windows with that head, tested on both (mean over seeds, "
           "range). Mixed rows: `bench/head_swap.py`.", "", *head_swap_table(protocol_runs, swaps, plan.protocols), ""]
          if swaps else []),
        *(["### Raccoon: which false positives outrank the true ones?", "",
           f"Detections in decreasing score (as AP walks them) until {100 * fp_analysis['recall']:.0f}% of the "
           "boxes are found; each false positive on the way by its relation to the box it overlaps most "
           "(part: mostly inside it and smaller; too big: covers it and is larger; background: under 30% of "
           "the detection on it; shifted: the rest). `bench/fp_types.py`.", "",
           *fp_type_table(fp_analysis), ""] if fp_analysis else []),
        "## Accuracy (VOC07 11-point mAP, %) and test time, every run", "", *accuracy_table(runs), "",
        "\"mAP without bbox\" is the same model and the same scores with box regression switched off "
        "(the paper's fc7 + SVM row); pool5 rows have no fine-tuning and no box regression.", "",
        "## Test time per image per stage (seconds, mean over the test split)", "", *stage_table(runs), "",
        "## Training time per stage (seconds) and feature cache on disk", "", *training_table(runs), "",
        "Proposals and conv5 maps are cached per dataset and shared by every experiment with the same "
        "parameters: the first experiment to need a cache pays for it, later ones show about 0 s there.", "",
        "## Feature cache per training image", "", *cache_table(runs), "",
        "## SPP-net against R-CNN, side by side", "",
        "**Superseded on 2026-12-06** by `bench/spp_speedup.py` on the shipped configs' models "
        "([benchmarks.md](benchmarks.md#headline)): the ratios below are of older models of the "
        "comparison protocols, R-CNN on 10 images, kept as the log of those runs.", "",
        "Timed in one process, image by image, each model on the same images and the same windows "
        "(median seconds per image, proposals excluded):", "", *speed_table(speeds), "",
        "Paper (GPU, VOC 2007, proposals excluded): SPP-net is "
        f"{PAPER['speedup_alexnet']['1-scale']}x (1 scale) and {PAPER['speedup_alexnet']['5-scale']}x (5 scales) "
        f"faster than R-CNN on AlexNet, {PAPER['speedup_zf5']['1-scale']}x and {PAPER['speedup_zf5']['5-scale']}x "
        f"on the same ZF-5; feature cache {PAPER['cache_gb']['SPP-net']} GB against "
        f"{PAPER['cache_gb']['R-CNN']} GB; mAP (fine-tuned fc7 + bbox) "
        + ", ".join(f"{k} {v}" for k, v in PAPER["map"].items()) + ".", "",
        "Windows \"default\" are the dataset config's search; \"paper\" are protocol P's, at the "
        "paper's ~2000 per image (on BCCD they are the same search). The ratio grows with the number of "
        "windows, since R-CNN pays a conv pass per window and SPP-net one per scale.", "",
        "Commands: `.venv/bin/python -m bench.detection run` (all experiments; cached, resumable; "
        "`--seeds 0 1 2` for the seed repeats), `... speed --images 10`, `... report`. "
        "Stage timings of the `run` tables were taken while other "
        "benchmarks shared the 2 cores and lean high; the side-by-side speed table was measured alone.", "",
    ]
    write_text_atomic(out_md, "\n".join(body) + "\n")


# The lab log's pages, in the order docs/benchmarks_log.md lists them; each is written by its
# benchmark (or by hand from its output) and keeps the command that produced its figures.
SECTIONS = ("benchmarks_detection.md", "benchmarks_speed.md", "benchmarks_window_mapping.md",
            "benchmarks_pooling.md", "benchmarks_proposals.md", "benchmarks_eval.md")


def heading_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def assemble_benchmarks_doc(docs: Path) -> Path:
    """docs/benchmarks_log.md: the lab log's index, a link to each page of :data:`SECTIONS` and
    to its sections. An index, not a copy, so that each experiment is written down once."""
    parts = ["# Benchmarks: the lab log", "",
             "Every experiment, once, in the page its benchmark writes; each page names the command "
             "that produced its figures. The shipped configs' headline figures, each linked to its "
             "record, are in [benchmarks.md](benchmarks.md); the rules and options measured against "
             "the shipped configs in [benchmarks_rules.md](benchmarks_rules.md). All measured on the "
             "development machine: 2 CPU cores (virtualised AMD EPYC), no GPU, 23.5 GiB RAM. "
             "This index is written by `bench/detection.py report`.", ""]
    for name in SECTIONS:
        path = docs / name
        if not path.exists():
            continue
        lines = path.read_text().splitlines()
        title = next((line[2:] for line in lines if line.startswith("# ")), name)
        parts.append(f"- [{title}]({name})")
        parts += [f"  - [{line[3:]}]({name}#{heading_anchor(line[3:])})"
                  for line in lines if line.startswith("## ")]
    out = docs / "benchmarks_log.md"
    write_text_atomic(out, "\n".join(parts) + "\n")
    return out
