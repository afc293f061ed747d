"""bench/detection_report.py: the lab log's index (docs/benchmarks_log.md) links its pages, never copies them."""
from __future__ import annotations

import json

from bench.detection_report import SECTIONS, assemble_benchmarks_doc, heading_anchor, load_records


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
