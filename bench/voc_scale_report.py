"""docs/voc2007_scaling.md and its figure from bench/results/voc_scale/train*.json.

Measured curves (time, peak memory, disk per stage against trainval images)
and the projection from them to VOC 2007 (5011 trainval + 4952 test), on
this machine and on Ray with N workers.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

VOC_TRAINVAL, VOC_TEST = 5011, 4952
RECIPE_ITERATIONS = 40000  # configs/voc2007_mobilenet.yaml
# Stages that are a map over images (Ray spreads them) and those that run in the driver.
MAP_STAGES = ("proposals", "conv5_cache")
FIT_STAGES = ("pool_training_windows", "svm", "bbox")


def load(results: Path) -> list[dict]:
    recs = [json.loads(p.read_text()) for p in results.glob("train*.json")]
    return sorted(recs, key=lambda r: r["train_images"])


def mem(record: dict) -> dict:
    """Peak memory per stage, MB (records before the sampler fix call it peak_pss_mb)."""
    return record.get("peak_memory_mb") or record.get("peak_pss_mb", {})


def linear_fit(x, y) -> tuple[float, float]:
    """(intercept, slope) of a least-squares line."""
    slope, intercept = np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)
    return float(intercept), float(slope)


def projection(recs: list[dict], ray_overhead: dict | None, workers: tuple[int, ...] = (8, 32)) -> dict:
    """Seconds per stage for VOC 2007 on this machine, and the map stages on Ray with N CPUs."""
    n = [r["train_images"] for r in recs]
    out: dict[str, float] = {}
    # Map stages: wall seconds per computed entry (2 cores), times VOC's entries.
    per_entry = {}
    for stage, entries_key, voc_entries in (("proposals", "proposals", VOC_TRAINVAL),
                                            ("conv5_cache", "conv5", 2 * VOC_TRAINVAL)):
        pairs = [(r["timings_s"][stage], r["computed_entries"][entries_key]) for r in recs
                 if r["computed_entries"][entries_key] > 0]
        per_entry[stage] = float(np.median([t / e for t, e in pairs])) if pairs else float("nan")
        out[stage] = per_entry[stage] * voc_entries
    for stage in FIT_STAGES:
        a, b = linear_fit(n, [r["timings_s"][stage] for r in recs])
        out[stage] = a + b * VOC_TRAINVAL
    ft = np.median([r["timings_s"]["finetune"] / r["finetune_iterations"] for r in recs])
    out["finetune"] = float(ft) * RECIPE_ITERATIONS
    last = recs[-1]
    test = last.get("test_seconds_per_image") or {}
    out["test_proposals"] = per_entry["proposals"] * VOC_TEST
    out["test_detect"] = test.get("total_excluding_proposals", float("nan")) * VOC_TEST
    local_total = sum(out.values())
    ray = {}
    cores = last.get("cpus", 2)
    factor = {"proposals": 1.0, "conv5_cache": 1.0, "test_detect": 1.0}
    if ray_overhead:
        factor = {"proposals": ray_overhead["ray_over_local"]["proposals"],
                  "conv5_cache": ray_overhead["ray_over_local"]["conv5_cache"],
                  "test_detect": ray_overhead["ray_over_local"]["detect"]}
    for w in workers:
        spread = {
            "proposals": out["proposals"] * factor["proposals"] * cores / w,
            "conv5_cache": out["conv5_cache"] * factor["conv5_cache"] * cores / w,
            "test_proposals": out["test_proposals"] * factor["proposals"] * cores / w,
            "test_detect": out["test_detect"] * factor["test_detect"] * cores / w,
        }
        driver = {k: v for k, v in out.items() if k not in spread}
        ray[w] = {"total": sum(spread.values()) + sum(driver.values()), **spread, **driver}
    return {"local": out, "local_total": local_total, "ray": ray, "per_entry": per_entry,
            "finetune_s_per_iteration": float(ft)}


def figure(recs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["train_images"] for r in recs]
    stages = ["proposals", "conv5_cache", "pool_training_windows", "finetune", "svm", "bbox"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for s in stages:
        a.plot(n, [r["timings_s"].get(s, 0) / 60 for r in recs], marker="o", label=s)
    a.plot(n, [r["train_wall_s"] / 60 for r in recs], marker="s", color="black", label="training, total")
    a.set_xlabel("trainval images (each also trained as its mirror)")
    a.set_ylabel("minutes (2 cores)")
    a.set_title("Training time per stage")
    a.legend(fontsize=8)
    a.grid(alpha=0.3)
    mem_stages = sorted({k for r in recs for k in mem(r)} - {"other"},
                        key=lambda k: -max(mem(r).get(k, 0) for r in recs))[:7]
    for s in mem_stages:
        b.plot(n, [mem(r).get(s, np.nan) / 1024 for r in recs], marker="o", label=s)
    b.set_xlabel("trainval images")
    b.set_ylabel("peak memory, GB (PSS, process + workers)")
    b.set_title("Peak memory per stage")
    b.set_ylim(bottom=0)
    b.legend(fontsize=8)
    b.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def hours(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.0f} min"


def write_report(results: Path, doc: Path, fig_path: Path) -> None:
    recs = load(results)
    if not recs:
        raise SystemExit(f"no results in {results}; run python -m bench.voc_scale all first")
    overhead_path = results.parent / "ray_overhead.json"
    overhead = json.loads(overhead_path.read_text()) if overhead_path.exists() else None
    figure(recs, fig_path)
    proj = projection(recs, overhead)
    stages = ["proposals", "conv5_cache", "pool_training_windows", "finetune", "svm", "bbox"]
    lines = [
        "# A VOC 2007-sized run, measured",
        "",
        "Generated by `python -m bench.voc_scale report` from `bench/results/voc_scale/` "
        "(the runs: `python -m bench.voc_scale all --sizes " + " ".join(str(r["train_images"]) for r in recs)
        + f" --test {recs[-1].get('test_images', 0)}`).",
        "",
        "Data: a generated set shaped like VOC 2007 (`detector/data/voc_like.py`: VOC's image sizes, "
        "mostly 500 x 375; 20 classes; ~2.4 objects per image; ~25% of images with several classes). "
        "Training: `configs/voc2007_mobilenet.yaml` with the ImageNet MobileNetV2 file of ../shared/weights "
        f"(1 scale, 688; fc 2048; flips on, so every image trains twice), fine-tuning cut to "
        f"{recs[0]['finetune_iterations']} iterations (its time per iteration does not depend on the "
        "number of images; the projection uses the recipe's 40,000). Machine: 2 CPU cores, no GPU.",
        "",
        "The sizes are nested (the first N trainval images) and share one cache: each run computes "
        "proposals and conv5 maps for its new images only (the \"computed\" column); every other stage "
        "runs on all N images in its own workdir.",
        "",
        "![time and memory per stage](voc2007_scaling.png)",
        "",
        "## Time per stage (seconds)",
        "",
        "| trainval images | " + " | ".join(stages) + " | total | computed: proposals / conv5 entries |",
        "|---" * (len(stages) + 3) + "|",
    ]
    for r in recs:
        t = r["timings_s"]
        lines.append(f"| {r['train_images']} | " + " | ".join(f"{t.get(s, 0):.0f}" for s in stages)
                     + f" | {r['train_wall_s']:.0f} | {r['computed_entries']['proposals']} / "
                       f"{r['computed_entries']['conv5']} |")
    lines += ["", "Per computed entry: proposals "
              f"{proj['per_entry']['proposals']:.2f} s/image, conv5 {proj['per_entry']['conv5_cache']:.2f} "
              "s/map (wall, 2 cores). Fine-tuning "
              f"{proj['finetune_s_per_iteration'] * 1000:.0f} ms/iteration.", ""]
    lines += ["## Peak memory per stage (GB, PSS of the process and its workers)", ""]
    mem_stages = ["proposals", "conv5_cache", "pool_training_windows", "finetune", "svm", "bbox", "test"]
    lines += ["| trainval images | " + " | ".join(mem_stages) + " |", "|---" * (len(mem_stages) + 1) + "|"]
    for r in recs:
        m = mem(r)
        lines.append(f"| {r['train_images']} | " + " | ".join(
            f"{m[s] / 1024:.2f}" if s in m else "-" for s in mem_stages) + " |")
    lines += ["", "## Disk (MB)", "", "| trainval images | proposals cache | conv5 cache | stage checkpoints | model |",
              "|---|---|---|---|---|"]
    for r in recs:
        d = r["disk_mb"]
        lines.append(f"| {r['train_images']} | {d['proposals_cache']:.0f} | {d['conv5_cache']:.0f} | "
                     f"{d['stages']:.0f} | {d['model']:.0f} |")
    lines += ["", "The caches hold every image computed so far (all sizes share them, the test split's proposals "
              "included).", ""]
    lines += ["## Test", "", "| trainval images | test images | mAP | without box regression | s/img excl. proposals |",
              "|---|---|---|---|---|"]
    for r in recs:
        if "mAP" in r:
            lines.append(f"| {r['train_images']} | {r['test_images']} | {100 * r['mAP']:.1f} | "
                         f"{100 * (r['mAP_without_bbox'] or 0):.1f} | "
                         f"{r['test_seconds_per_image']['total_excluding_proposals']:.2f} |")
    lines += ["", "## Projection to VOC 2007 (5011 trainval + 4952 test)", "",
              "From the curves above: the map stages at their measured cost per entry (VOC trainval: 5011 "
              "proposals, 10,022 conv5 maps with the mirrors), pooling, SVMs and box regression by a straight "
              "line through the measured sizes, fine-tuning at 40,000 iterations, testing at the measured "
              "seconds per image. On Ray with N CPUs the map stages (proposals, conv5 cache, test inference) "
              "divide by N/2"
              + (" and carry the one-machine overhead measured by `bench.ray_overhead`" if overhead else "")
              + "; the driver stages do not.", "",
              "| stage | this machine (2 cores) | " + " | ".join(f"Ray, {w} CPUs" for w in proj["ray"]) + " |",
              "|---|---|" + "---|" * len(proj["ray"])]
    for stage, secs in proj["local"].items():
        lines.append(f"| {stage} | {hours(secs)} | " + " | ".join(hours(v[stage]) for v in proj["ray"].values())
                     + " |")
    lines.append(f"| **total** | **{hours(proj['local_total'])}** | "
                 + " | ".join(f"**{hours(v['total'])}**" for v in proj["ray"].values()) + " |")
    lines += ["", "Memory does not grow with the images past the budgets: the fine-tuning bank "
              "(`finetune.bank_max_mb`, 2000), the regression windows (`bbox.max_mb`, 1000) and the SVMs' "
              "negative caches (a fixed byte budget) shrink their per-image share instead; what still grows "
              "is the list of records and the SVM positives (kilobytes per image).", ""]
    doc.write_text("\n".join(lines) + "\n")
