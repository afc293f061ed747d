"""The VOC-density runs of the current recipe (issue 29): the lead section of docs/voc2007_scaling.md.

Reads ``bench/results/voc_scale/clutter/``: each size's record (``train<N>.json``,
``bench.voc_scale run --background clutter``), ``caches.json`` (``bench.voc_scale
caches``: the search's seconds and windows per image from the proposal stores,
each cache's disk) and the finished stages of a run whose process was killed
before it wrote a record (``train<N>_part*_killed.json``; its resumed run
restored those stages, so its record holds their restore time, not their cost).

The projection to VOC 2007 multiplies measured per-unit costs only: search per
image (one core, over the proposal workers), frozen-prefix and conv5 maps per
record computed, fine-tuning per iteration, SVMs and box regression per training
record (proportional from one size; a straight line once two sizes are measured),
testing per image. It says which: a stage with no measured cost is named, not
filled in.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

VOC_TRAINVAL, VOC_TEST = 5011, 4952
# The shipped config's svm.norm_windows=random against the 2500-image run's exact mean norm, both on
# one VOC-density set at VOC's seed-to-budget ratio, side by side (bench.stage_ab): the SVM stage's
# per-record cost of the runs measured before it is scaled by this record's new/old median ratio.
SVM_LEVER = Path(__file__).resolve().parent / "results" / "stage_ab" / "dense150_svm_norm_random.json"
VOC_RECORDS = 2 * VOC_TRAINVAL  # with mirrors
RECIPE_ITERATIONS = 40000  # configs/voc2007_mobilenet.yaml
TARGET_HOURS = 6.0  # issue 29


def load_density(results: Path) -> tuple[list[dict], dict | None, list[dict], dict | None]:
    """(the sizes' records by trainval images, caches.json or None, the killed runs' parts,
    test_network.json or None: ``bench.test_network``'s network-alone test)."""
    recs = sorted((json.loads(p.read_text()) for p in results.glob("train*.json")
                   if "_part" not in p.name and not p.name.endswith(".partial.json")),
                  key=lambda r: r["trainval_images"])
    caches = results / "caches.json"
    parts = [json.loads(p.read_text()) for p in sorted(results.glob("train*_part*_killed.json"))]
    network = results / "test_network.json"
    return (recs, json.loads(caches.read_text()) if caches.exists() else None, parts,
            json.loads(network.read_text()) if network.exists() else None)


def measured(r: dict, stage: str) -> bool:
    """Whether the record's seconds for ``stage`` are its cost: computed by its process or by an
    earlier part of the run (``bench.voc_scale.StageParts``), not only restored from a checkpoint."""
    return stage not in r.get("reused_stages", []) or stage in r.get("stages_from_earlier_parts", [])


def _computed(r: dict, stage: str, entries: str) -> tuple[float, int] | None:
    """(seconds, entries) of a record's cache stage when its run (any part) computed entries."""
    n = r.get("computed_entries", {}).get(entries, 0)
    secs = r["timings_s"].get(stage)
    return (secs, n) if n > 0 and secs is not None else None


def svm_lever(path: Path = SVM_LEVER) -> dict | None:
    """The stage_ab record of ``svm.norm_windows=random`` at VOC density (None when absent)."""
    return dict(json.loads(path.read_text()), name=path.stem) if path.exists() else None


def unit_costs(recs: list[dict], caches: dict | None, parts: list[dict],
               lever: dict | None = None, network: dict | None = None) -> dict[str, dict]:
    """Seconds per unit of each stage, with the unit, the VOC 2007 count and where it was measured;
    ``lever`` (:func:`svm_lever`) scales the SVMs of runs made before ``svm.norm_windows=random``;
    ``network`` (``bench.test_network``) gives the test row: the network alone, its proposals
    cached, as the search is charged apart (a run's own test shared the cores with its search)."""
    out: dict[str, dict] = {}

    def put(stage, seconds, unit, voc_units, source):
        out[stage] = {"seconds_per_unit": float(seconds), "unit": unit, "voc_units": voc_units, "source": source}

    if caches:
        tv = caches["trainval"]
        put("proposals (trainval + test)", tv["seconds_per_image_mean"] / caches["workers"], "image",
            VOC_TRAINVAL + VOC_TEST, f"{tv['images']} images' search seconds (one core each) over "
            f"{caches['workers']} workers")
    for stage, entries in (("frozen_prefix_cache", "prefix"), ("conv5_cache_finetuned", "conv5")):
        got = [(c, r["trainval_images"]) for r in recs if (c := _computed(r, stage, entries))]
        if got:
            (secs, n), size = got[-1]
            put(stage, secs / n, "record", VOC_RECORDS, f"{n} records computed, {size}-image run")
        else:
            for p in parts:
                if stage in p["stages"]:
                    s = p["stages"][stage]
                    put(stage, s["seconds_per_record"], "record", VOC_RECORDS,
                        f"{s['entries']} records, {p['trainval_images']}-image run's killed process (file times)")
                    break
    fine = [r for r in recs if measured(r, "finetune")]
    if fine:
        r = fine[-1]
        secs = r["timings_s"]["finetune"] - r["timings_s"].get("frozen_prefix_cache", 0.0)
        put("fine-tuning iterations", secs / r["finetune_iterations"], "iteration", RECIPE_ITERATIONS,
            f"{r['finetune_iterations']} iterations, {r['trainval_images']}-image run")
    else:
        for p in parts:
            if "finetune_iterations" in p["stages"]:
                s = p["stages"]["finetune_iterations"]
                put("fine-tuning iterations", s["seconds_per_iteration"], "iteration", RECIPE_ITERATIONS,
                    f"{s['iterations']} iterations, {p['trainval_images']}-image run's killed process")
                break
    for stage in ("svm", "bbox"):
        fitted = [r for r in recs if stage in r["timings_s"] and measured(r, stage)]
        # The SVMs of a run measured with the exact mean norm (before the option, or norm_windows=all)
        # are scaled to the shipped svm.norm_windows=random by the lever's measured ratio, run by run.
        ratio = lever["median_s"]["new"] / lever["median_s"]["old"] if lever and stage == "svm" else 1.0
        scaled = [ratio if not (r.get("stats", {}).get("svm") or {}).get("mean_norm_given") else 1.0
                  for r in fitted]
        pts = [(r["records"], r["timings_s"][stage] * f) for r, f in zip(fitted, scaled)]
        if len(pts) >= 2:
            slope, intercept = np.polyfit(*zip(*pts), 1)
            put(stage, slope + intercept / VOC_RECORDS, "record", VOC_RECORDS,
                f"a straight line through {len(pts)} sizes ({', '.join(str(p[0]) for p in pts)} records)")
        elif pts:
            put(stage, pts[0][1] / pts[0][0], "record", VOC_RECORDS,
                f"{pts[0][0]} records, proportional (one size measured)")
        if any(f != 1.0 for f in scaled):
            old, new = lever["seconds"]["old"], lever["seconds"]["new"]
            spread = (min(new) / max(old), max(new) / min(old))
            unscaled = [r["timings_s"][stage] / r["records"] for r, f in zip(fitted, scaled) if f != 1.0]
            c = out[stage]
            if all(f != 1.0 for f in scaled):  # the cost is the ratio times measured seconds
                c["range"] = tuple(c["seconds_per_unit"] / ratio * q for q in spread)
            c["source"] += (f": {', '.join(f'{u:.3f}' for u in unscaled)} s with the exact mean norm, x {ratio:.2f} "
                            f"for the shipped `svm.norm_windows=random` (old/new side by side, {lever['name']}.json)")
    tested = [r for r in recs if r.get("test_seconds_per_image")]
    if network and not network.get("background_load_processes"):
        totals = [run["seconds_per_image"]["total_excluding_proposals"] for run in network["runs"]]
        put("test (excluding proposals)", network["median_total_excluding_proposals"], "image", VOC_TEST,
            f"{network['images']} test images, proposals cached, the network alone, median of "
            f"{len(network['runs'])} passes (test_network.json)")
        out["test (excluding proposals)"]["range"] = (min(totals), max(totals))
    elif tested:
        r = tested[-1]
        put("test (excluding proposals)", r["test_seconds_per_image"]["total_excluding_proposals"], "image",
            VOC_TEST, f"{r['test_images']} test images, {r['trainval_images']}-image model")
    return out


def span(values) -> str:
    """"a" or "a-b" (thousands separated) for the smallest and largest of ``values``."""
    lo, hi = min(values), max(values)
    return f"{lo:,}" if lo == hi else f"{lo:,}-{hi:,}"


def hours(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.0f} min"


def density_lines(recs: list[dict], caches: dict | None, parts: list[dict],
                  network: dict | None = None, lever: dict | None = None) -> list[str]:
    """Markdown of the VOC-density runs and the projection from their per-unit costs."""
    if not recs and not parts:
        return []
    lines = ["# VOC 2007 at its window density: the current recipe, measured", "",
             "Generated by `python -m bench.voc_scale report` from `bench/results/voc_scale/clutter/`. The runs:", "",
             "```bash",
             "sppnet propose --config <configs/voc2007_mobilenet.yaml with the set's data.root, class names, "
             "cache_dir> --split train_scaling   # prefilled, resumable",
             "python -m bench.voc_scale run --train N --background clutter --iterations 2000",
             "python -m bench.voc_scale caches --background clutter",
             "```", ""]
    if caches:
        tv, te = caches["trainval"], caches["test"]
        lines += [f"Data: the generated VOC 2007-shaped set with its cluttered background (`--background clutter`), "
                  f"where selective search finds **{tv['windows_per_image']:.0f} windows per image** "
                  f"({tv['images']} trainval images; {te['windows_per_image']:.0f} on {te['images']} test images), "
                  f"the ~2000 R-CNN and SPP-net report on VOC photos; search {tv['seconds_per_image_mean']:.2f} s "
                  "per image on one core (mean). Recipe: `configs/voc2007_mobilenet.yaml` as shipped (conv "
                  "fine-tuning of the last 2 blocks through the pyramid, frozen-prefix cache, streamed "
                  "image-centric sampler, fc 2048, 1 scale 688, mirrors, SVMs on fc7 with unbounded mined "
                  "caches and seeds within `svm.seed_mb`, box regression on every window over its IoU) with "
                  "fine-tuning cut to 2000 iterations (its time per iteration does not depend on the images; "
                  f"the projection uses the recipe's {RECIPE_ITERATIONS:,}). Machine: 2 CPU cores, no GPU; "
                  "nothing else ran but each run's watchdog (a read of the process tree's memory every 20 s) "
                  "and, during the 2500-image run, a few py-spy stack dumps and one 40 s py-spy profile at "
                  "20 samples per second.", ""]
    stages = ["frozen_prefix_cache", "finetune", "conv5_cache_finetuned", "svm", "bbox"]
    if recs:
        lines += ["## Time per stage (seconds), peak memory (GiB) and disk", "",
                  "| trainval images | records | windows per image | " + " | ".join(stages)
                  + " | training total | peak memory, whole run (GiB) | reused stages |",
                  "|---" * (len(stages) + 6) + "|"]
        for r in recs:
            t = r["timings_s"]
            lines.append(f"| {r['trainval_images']} | {r['records']} | {r['windows_per_image']:.0f} | "
                         + " | ".join(f"{t[s]:.0f}" if s in t else "-" for s in stages)
                         + f" | {r['train_wall_s']:.0f} | {r['peak_memory_gib']:.1f} | "
                         f"{', '.join(r.get('reused_stages', [])) or '-'} |")
            for p in parts:  # the stages a killed first process computed for this size
                if p["trainval_images"] == r["trainval_images"]:
                    s = p["stages"]
                    peak = max(p.get("peak_memory_mib_20s_samples", {}).values(), default=float("nan"))
                    lines.append(f"| {r['trainval_images']}, its first process (killed; from its files) | {r['records']} | "
                                 f"{r['windows_per_image']:.0f} | {s['frozen_prefix_cache']['seconds']:.0f} | "
                                 f"{s['finetune_iterations']['seconds']:.0f} (the iterations) | "
                                 f"{s['conv5_cache_finetuned']['seconds']:.0f} | killed | - | - | "
                                 f"{peak / 1024:.1f} (20 s samples, incl. the killed SVM pass) | - |")
        lines += ["", "Peak memory per stage (GiB; RSS of the process + PSS of its workers, sampled every 0.5 s):", "",
                  "| trainval images | " + " | ".join(sorted({k for r in recs for k in r['peak_memory_mb']})) + " |",
                  "|---" * (1 + len({k for r in recs for k in r['peak_memory_mb']})) + "|"]
        keys = sorted({k for r in recs for k in r["peak_memory_mb"]})
        for r in recs:
            m = r["peak_memory_mb"]
            lines.append(f"| {r['trainval_images']} | " + " | ".join(f"{m[k] / 1024:.1f}" if k in m else "-"
                                                                     for k in keys) + " |")
        lines.append("")
        for r in recs:
            st = r.get("stats", {})
            ft, bb = st.get("finetune") or {}, st.get("bbox") or {}
            use = []
            if "distinct_windows" in ft:
                use.append(f"fine-tuning drew {ft['distinct_windows']:,} distinct windows of {ft['eligible_windows']:,} "
                           f"eligible, from {ft['images']:,} of {ft['eligible_images']:,} images in "
                           f"{ft.get('iterations', '?')} iterations")
            if "distinct_windows" in bb:
                use.append(f"box regression used {bb['distinct_windows']:,} of {bb['eligible_windows']:,} windows "
                           f"over its IoU, from {bb['images']:,} of {bb['eligible_images']:,} images")
            svm = st.get("svm") or {}
            if svm.get("seed_negatives"):
                seeds = svm["seed_negatives"]
                use.append(f"the SVMs kept {span(seeds['kept'])} seed negatives per class of {span(seeds['offered'])} "
                           "offered (`svm.seed_mb`)")
            if svm.get("cache_sizes"):
                final = svm["cache_sizes"][-1]
                use.append(f"their mined caches ended at {span(final)} negatives per class after "
                           f"{len(svm.get('updates', []))} solver runs")
            passes = {p["name"]: p["seconds"] for p in svm.get("passes", [])}
            if passes:
                use.append("SVM passes " + ", ".join(f"{k} {v:.0f} s" for k, v in passes.items()))
            if use:
                lines += [f"{r['trainval_images']} images: " + "; ".join(use) + ".", ""]
            if "mAP" in r:
                lines += [f"Test ({r['test_images']} generated images): mAP {100 * r['mAP']:.1f} "
                          f"({100 * (r['mAP_without_bbox'] or 0):.1f} without box regression); the shapes are "
                          "easy, so this says the run works end to end, not what VOC 2007 would give.", ""]
    for p in parts:
        lines += [f"**A killed process.** {p['what']} How: {p['how']}", ""]
    if caches:
        d = caches["disk_mb"]
        lines += [f"Disk after the runs (the caches are shared by the sizes): proposals {d['proposals_cache'] / 1024:.1f} "
                  f"GiB, frozen-prefix maps {d['prefix_cache'] / 1024:.1f} GiB ({caches['entries']['prefix']:,} "
                  f"records), conv5 maps {d['conv5_cache'] / 1024:.1f} GiB ({caches['entries']['conv5']:,}).", ""]
    costs = unit_costs(recs, caches, parts, lever, network)
    test_note = ("the test row is the network alone with the split's proposals cached (`bench.test_network`, "
                 "record test_network.json): a run's own test shared the two cores with its split's search "
                 "(the pipeline), so its seconds per image would charge the search twice"
                 if network else "the test row is the network's seconds per image, its search left out")
    lines += ["## Projection to VOC 2007 (5011 trainval with mirrors + 4952 test, 40,000 iterations)", "",
              "Measured per-unit costs times VOC 2007's units; nothing else. The test images' search is "
              "charged at the trainval images' rate (the search alone, on the prefill's 2 workers): the test "
              "split's own entries took longer each (caches.json) because that search ran beside the "
              f"network; {test_note}.", "",
              "| stage | seconds per unit | unit | VOC 2007 units | projected | measured on |", "|---|---|---|---|---|---|"]
    total = 0.0
    for stage, c in costs.items():
        secs = c["seconds_per_unit"] * c["voc_units"]
        total += secs
        lines.append(f"| {stage} | {c['seconds_per_unit']:.3f} | {c['unit']} | {c['voc_units']:,} | {hours(secs)} | "
                     f"{c['source']} |")
    missing = [s for s in ("proposals (trainval + test)", "frozen_prefix_cache", "fine-tuning iterations",
                           "conv5_cache_finetuned", "svm", "bbox", "test (excluding proposals)") if s not in costs]
    if not missing:
        lines.append(f"| **total** | | | | **{hours(total)}** | |")
    low = sum(c.get("range", (c["seconds_per_unit"],) * 2)[0] * c["voc_units"] for c in costs.values())
    high = sum(c.get("range", (c["seconds_per_unit"],) * 2)[1] * c["voc_units"] for c in costs.values())
    target = TARGET_HOURS * 3600
    verdict = "at" if low <= target <= high else "within" if total <= target else "over"
    lines += ["", f"Against the issue's {TARGET_HOURS:.0f} h on 2 cores: "
              + (f"**{verdict}** ({total / 3600:.2f} h; {low / 3600:.2f}-{high / 3600:.2f} h from the "
                 "fastest and slowest measured passes of the stages measured more than once)" if not missing else
                 f"not projected: no measured cost for {', '.join(missing)}") + "."]
    if recs and len(recs) < 2:
        lines += ["", "One size is measured: the SVM and box-regression costs are taken per record "
                  "(proportional); the SVMs' mined caches and solver may grow faster than the records, which "
                  "the 5011-image run is there to show."]
    lines.append("")
    return lines
