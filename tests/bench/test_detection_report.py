"""bench/detection_report.py: the lab log's index (docs/benchmarks_log.md) links its pages, never copies them;
the SPP-net against R-CNN table pools as seeds of a row only the runs that ran with that row's setting."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.detection import EXPERIMENTS, FEW_IMAGES, PAPER_WINDOWS, Experiment, report_plan
from bench.detection_report import (SECTIONS, assemble_benchmarks_doc, heading_anchor, load_records,
                                    split_protocol_runs, write_detection_report)

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_heading_anchor_is_githubs():
    assert heading_anchor("Huge pages (THP_MEM_ALLOC_ENABLE)") == "huge-pages-thp_mem_alloc_enable"
    assert heading_anchor("How it works (`detector/features/pyramid.py`, `x.py`)") == "how-it-works-detectorfeaturespyramidpy-xpy"
    assert heading_anchor("The speed run of 2026-12-02") == "the-speed-run-of-2026-12-02"


def test_the_log_is_an_index_of_its_pages(tmp_path):
    first, second = SECTIONS[0], SECTIONS[1]
    (tmp_path / first).write_text("# Detection runs\n\nA body line of the first page.\n\n## SPP-net vs R-CNN\n\nrows\n")
    (tmp_path / second).write_text("# Speed runs\n\n## Quiet, then loaded\n\n### a sub-section\n")
    text = assemble_benchmarks_doc(tmp_path).read_text()
    assert f"- [Detection runs]({first})" in text
    assert f"  - [SPP-net vs R-CNN]({first}#spp-net-vs-r-cnn)" in text
    assert f"  - [Quiet, then loaded]({second}#quiet-then-loaded)" in text
    assert "A body line" not in text and "rows" not in text and "a sub-section" not in text
    assert all(name not in text for name in SECTIONS[2:])  # pages that do not exist are left out


def test_records_of_other_benchmarks_are_not_detection_runs(tmp_path):
    """bench/results/ also holds bench/speed.py's speed_*.json (no dataset) and ray_overhead.json:
    the report reads only the detection runs and the SPP-vs-R-CNN speed records (it crashed with
    KeyError 'dataset' on them)."""
    run = {"dataset": "raccoon", "experiment": "fewimg_spp1_fc7", "mAP": 0.7}
    speed = {"dataset": "raccoon", "windows": "default", "speedup_vs_rcnn": {"spp1": 9.0}}
    records = {"raccoon_fewimg_spp1_fc7.json": run, "raccoon_speed.json": speed,
               "speed_idle.json": {"command": "python -m bench.speed", "conditions": "quiet", "machine": "x"},
               "ray_overhead.json": {"cpus": 2, "runs": []}, "detection.json": {"runs": [run]},
               "notes.json": ["not a record"]}
    for name, record in records.items():
        (tmp_path / name).write_text(json.dumps(record))
    assert load_records(tmp_path) == ([run], [speed])


def run_record(exp: Experiment, dataset: str, seed: int, mAP: float) -> dict:
    """A record with the fields bench.detection's run_experiment writes and the report reads."""
    return {"dataset": dataset, "experiment": exp.name, "run": exp.name if seed == 0 else f"{exp.name}_seed{seed}",
            "seed": seed, "protocol": exp.protocol, "method": exp.method, "label": exp.label,
            "overrides": exp.overrides_for(dataset), "trained_as": exp.train_as,
            "test_overrides": exp.test_overrides.get(dataset, []), "mAP": mAP, "mAP_without_bbox": mAP - 0.05,
            "test_seconds_per_image": {"total_excluding_proposals": 0.2}, "train_timings_s": {"total": 60.0},
            "feature_cache_bytes": 2**20, "train_images": 40, "test_images": 40}


def test_a_variants_runs_are_not_seeds_of_its_protocol_row(tmp_path):
    """The raccoon window-margin screen (protocol B, pool.window_margin=0) pooled as three more seeds of
    protocol B's SPP 1-scale row and moved it from 71.3 to 67.4; its runs now stay out of that row and of
    the head-swap table's B cell, and a note says where they are reported."""
    plain = Experiment("fewimg_spp1_fc7", "protocol B: SPP 1-scale", "B", "spp1", FEW_IMAGES, ("raccoon",))
    margin = Experiment("fewimg_spp1_fc7_m0", "protocol B: SPP 1-scale, window margin 0", "B", "spp1", FEW_IMAGES,
                        ("raccoon",), variant=["pool.window_margin=0"], reported_in="margins.md#the-screen")
    rcnn = Experiment("fewimg_rcnn_fc7", "protocol B: R-CNN", "B", "rcnn", FEW_IMAGES + ["mode=rcnn"], ("raccoon",))
    paper = Experiment("paper_spp1_fc7", "protocol P: SPP 1-scale", "P", "spp1", FEW_IMAGES, ("raccoon",),
                       PAPER_WINDOWS)
    # B's first seed-0 record predates the test_overrides and trained_as keys; it is still B's.
    legacy = {k: v for k, v in run_record(plain, "raccoon", 0, 0.72).items()
              if k not in ("test_overrides", "trained_as")}
    records = [legacy, run_record(plain, "raccoon", 1, 0.70), run_record(margin, "raccoon", 0, 0.61),
               run_record(margin, "raccoon", 1, 0.63), run_record(rcnn, "raccoon", 0, 0.74),
               run_record(paper, "raccoon", 0, 0.66)]
    assert records[2]["overrides"] == ["data.max_train_images=40", "pool.window_margin=0"]  # what the record says
    for r in records:
        (tmp_path / f"raccoon_{r['run']}.json").write_text(json.dumps(r))
    swap = {"head_from": "fewimg_spp1_fc7", "svm_windows_from": "paper_spp1_fc7",
            "test_B": {"mAP": 0.5, "mAP_without_bbox": 0.4}, "test_P": {"mAP": 0.5, "mAP_without_bbox": 0.4}}
    (tmp_path / "swap").mkdir()
    (tmp_path / "swap" / "raccoon_head_swap.json").write_text(json.dumps({"runs": [swap]}))

    write_detection_report(tmp_path, tmp_path / "report.md", {"python": "3"}, report_plan([plain, margin, rcnn, paper]))
    lines = (tmp_path / "report.md").read_text().splitlines()
    spp_b = [line for line in lines if line.startswith("| B | raccoon | SPP 1-scale |")]
    assert spp_b == ["| B | raccoon | SPP 1-scale | 71.0 (70.0-72.0, 2 seeds) | 66.0 (65.0-67.0, 2 seeds) "
                     "| **-3.0 / -3.0** |"]
    assert not any("61.0" in line or "4 seeds" in line for line in lines if line.startswith("| B |"))
    head_b = [line for line in lines if line.startswith("| B's windows | B's windows |")]
    assert head_b == ["| B's windows | B's windows | 71.0 (70.0-72.0, 2 seeds); 66.0 (65.0-67.0, 2 seeds) | not run |"]
    note = next(line for line in lines if line.startswith("Not in this table"))
    assert ("raccoon `fewimg_spp1_fc7_m0` (pool.window_margin=0; 2 runs; "
            "reported in [margins.md](margins.md#the-screen))") in note
    # Every run, the variant's too, is still in the every-run table.
    assert sum("window margin 0" in line for line in lines if line.startswith("| raccoon |")) == 2


def test_the_benchmarks_variants_are_kept_out_of_their_rows_and_their_pages_exist():
    """Against bench.detection's own list: a record of each experiment, as run_experiment writes it,
    lands in its protocol row unless the experiment is a variant (the window-margin screen's two)."""
    plan = report_plan(EXPERIMENTS)
    records = [run_record(e, d, 0, 0.5) for e in EXPERIMENTS for d in e.datasets]
    rows, variants = split_protocol_runs(records, plan.settings)
    assert {r["experiment"] for r in variants} == {"fewimg_spp1_fc7_m05", "fewimg_spp1_fc7_m0"}
    assert "fewimg_spp1_fc7" in {r["experiment"] for r in rows}
    for page in plan.variant_pages.values():
        name, anchor = page.split("#")
        headings = [line[3:] for line in (DOCS / name).read_text().splitlines() if line.startswith("## ")]
        assert anchor in [heading_anchor(h) for h in headings], page


def test_two_plain_settings_for_one_row_are_an_error():
    """A second experiment of the same protocol, dataset and method with another setting must say it is a
    variant: otherwise which of them the row's seeds are would be a guess."""
    plain = Experiment("fewimg_spp1_fc7", "B", "B", "spp1", FEW_IMAGES, ("raccoon",))
    other = Experiment("fewimg_spp1_fc7_m0", "B, margin 0", "B", "spp1", FEW_IMAGES + ["pool.window_margin=0"],
                       ("raccoon",))
    with pytest.raises(ValueError, match="fewimg_spp1_fc7_m0: a second setting for protocol B's spp1 on raccoon"):
        report_plan([plain, other])
