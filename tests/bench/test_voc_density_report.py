"""bench/voc_density_report.py: the VOC-density projection multiplies measured per-unit costs only."""
from __future__ import annotations

import json

import pytest

from bench.voc_density_report import (RECIPE_ITERATIONS, VOC_RECORDS, VOC_TEST, VOC_TRAINVAL, density_lines,
                                      load_density, unit_costs)

CACHES = {"workers": 2, "trainval": {"images": 100, "windows_per_image": 1900.0, "seconds_per_image_mean": 1.0},
          "test": {"images": 10, "windows_per_image": 1850.0}, "entries": {"prefix": 200, "conv5": 200},
          "disk_mb": {"proposals_cache": 100.0, "prefix_cache": 2048.0, "conv5_cache": 1024.0}}


def size_record(images: int, svm: float, reused=(), computed=None, **extra) -> dict:
    records = 2 * images
    return {"trainval_images": images, "records": records, "windows_per_image": 1900.0, "finetune_iterations": 100,
            "timings_s": {"frozen_prefix_cache": 0.1 * records, "finetune": 0.1 * records + 20.0,
                          "conv5_cache_finetuned": 0.01 * records, "svm": svm, "bbox": 0.05 * records},
            "computed_entries": computed if computed is not None else {"prefix": records, "conv5": records},
            "reused_stages": list(reused), "train_wall_s": 1.0, "peak_memory_gib": 4.0,
            "peak_memory_mb": {"svm": 4096.0}, "stats": {}, **extra}


def test_one_size_projects_each_stage_from_its_own_unit():
    costs = unit_costs([size_record(100, svm=100.0, test_images=10,
                                    test_seconds_per_image={"total_excluding_proposals": 0.5})], CACHES, [])
    assert costs["proposals (trainval + test)"]["seconds_per_unit"] == 0.5  # 1 s of one core over 2 workers
    assert costs["proposals (trainval + test)"]["voc_units"] == VOC_TRAINVAL + VOC_TEST
    assert costs["frozen_prefix_cache"]["seconds_per_unit"] == pytest.approx(0.1)
    assert costs["fine-tuning iterations"]["seconds_per_unit"] == pytest.approx(0.2)  # the prefix taken out
    assert costs["fine-tuning iterations"]["voc_units"] == RECIPE_ITERATIONS
    assert costs["svm"]["seconds_per_unit"] == pytest.approx(0.5) and costs["svm"]["voc_units"] == VOC_RECORDS
    assert "proportional" in costs["svm"]["source"]
    assert costs["test (excluding proposals)"]["voc_units"] == VOC_TEST


def test_two_sizes_fit_a_line_and_reused_stages_take_no_cost():
    small = size_record(100, svm=100.0)
    # The larger size reused the prefix cache of the first 100 images: its per-record cost is over what it computed.
    large = size_record(200, svm=300.0, reused=["finetune"], computed={"prefix": 200, "conv5": 400})
    costs = unit_costs([small, large], CACHES, [])
    assert costs["svm"]["seconds_per_unit"] * VOC_RECORDS == pytest.approx(100.0 + (VOC_RECORDS - 200) * 1.0)
    assert costs["frozen_prefix_cache"]["seconds_per_unit"] == pytest.approx(0.2)  # 40 s over the 200 it computed
    assert "100-image run" in costs["fine-tuning iterations"]["source"]  # the run that fine-tuned


def test_a_killed_process_supplies_the_stages_its_resumed_run_restored(tmp_path):
    resumed = size_record(100, svm=100.0, reused=["finetune"], computed={"prefix": 0, "conv5": 0})
    part = {"trainval_images": 100, "what": "killed", "how": "file times",
            "stages": {"frozen_prefix_cache": {"seconds_per_record": 0.09, "entries": 200, "seconds": 18.0},
                       "finetune_iterations": {"seconds_per_iteration": 0.18, "iterations": 2000, "seconds": 360.0},
                       "conv5_cache_finetuned": {"seconds_per_record": 0.013, "entries": 200, "seconds": 2.6}},
            "peak_memory_mib_20s_samples": {"fine-tuning": 1536}}
    for name, obj in (("train100.json", resumed), ("train100_part1_killed.json", part), ("caches.json", CACHES)):
        (tmp_path / name).write_text(json.dumps(obj))
    recs, caches, parts, network = load_density(tmp_path)
    assert [r["trainval_images"] for r in recs] == [100] and len(parts) == 1 and network is None
    costs = unit_costs(recs, caches, parts)
    assert costs["frozen_prefix_cache"]["seconds_per_unit"] == 0.09 and "killed" in costs["frozen_prefix_cache"]["source"]
    assert costs["fine-tuning iterations"]["seconds_per_unit"] == 0.18
    text = "\n".join(density_lines(recs, caches, parts))
    # No test run: the projection names what it lacks instead of a total against the target.
    assert "not projected: no measured cost for test (excluding proposals)" in text
    assert "1900 windows per image" in text and "**A killed process.** killed" in text
    assert "| 100, its first process (killed; from its files) | 200 | 1900 | 18 | 360 (the iterations) | 3 |" in text


def test_a_stage_an_earlier_part_computed_is_projected_from_the_merged_record():
    """A run killed after its SVMs and resumed: the record's SVM seconds are the earlier part's."""
    resumed = size_record(100, svm=120.0, reused=["finetune", "svm"])
    resumed["stages_from_earlier_parts"] = ["svm"]
    costs = unit_costs([resumed], CACHES, [])
    assert costs["svm"]["seconds_per_unit"] == pytest.approx(120.0 / 200)
    assert "fine-tuning iterations" not in costs  # only restored: no cost, and no part says otherwise


def test_the_svm_lever_scales_only_runs_measured_with_the_exact_norm():
    lever = {"name": "dense_ab", "median_s": {"old": 200.0, "new": 100.0},
             "seconds": {"old": [190.0, 210.0], "new": [95.0, 105.0]}}
    exact = size_record(100, svm=100.0)
    costs = unit_costs([exact], CACHES, [], lever)
    assert costs["svm"]["seconds_per_unit"] == pytest.approx(0.25)  # 0.5 s per record x 100/200
    assert "0.500 s with the exact mean norm" in costs["svm"]["source"] and "dense_ab.json" in costs["svm"]["source"]
    # A run that measured the random norm itself is not scaled again.
    shipped = size_record(100, svm=100.0, stats={"svm": {"mean_norm_given": True}})
    assert unit_costs([shipped], CACHES, [], lever)["svm"]["seconds_per_unit"] == pytest.approx(0.5)
    assert unit_costs([exact], CACHES, [])["svm"]["seconds_per_unit"] == pytest.approx(0.5)  # no lever record
    assert costs["svm"]["range"] == pytest.approx((0.5 * 95 / 210, 0.5 * 105 / 190))
    # Two sizes, one of each kind: the exact run is scaled before the line is fitted.
    bigger = size_record(200, svm=200.0, stats={"svm": {"mean_norm_given": True}})  # 0.5 s per record, shipped
    mixed = unit_costs([exact, bigger], CACHES, [], lever)["svm"]
    # The line through (200 records, 100 s x 0.5) and (400 records, 200 s): 0.75 s per record - 100 s.
    assert mixed["seconds_per_unit"] * VOC_RECORDS == pytest.approx(0.75 * VOC_RECORDS - 100.0)
    assert "range" not in mixed  # part of it is not a ratio of measured passes


def test_the_network_alone_test_replaces_the_run_s_own_test_row(tmp_path):
    run = size_record(100, svm=100.0, test_images=10, test_seconds_per_image={"total_excluding_proposals": 0.9})
    passes = [{"seconds_per_image": {"total_excluding_proposals": t}} for t in (0.38, 0.4, 0.45)]
    network = {"images": 50, "median_total_excluding_proposals": 0.4, "runs": passes, "background_load_processes": 0}
    assert unit_costs([run], CACHES, [])["test (excluding proposals)"]["seconds_per_unit"] == 0.9
    costs = unit_costs([run], CACHES, [], network=network)
    assert costs["test (excluding proposals)"]["seconds_per_unit"] == 0.4
    assert "the network alone" in costs["test (excluding proposals)"]["source"]
    assert costs["test (excluding proposals)"]["range"] == (0.38, 0.45)
    # A loaded measurement is not the projection's quiet figure.
    loaded = dict(network, background_load_processes=1)
    assert unit_costs([run], CACHES, [], network=loaded)["test (excluding proposals)"]["seconds_per_unit"] == 0.9
    (tmp_path / "train100.json").write_text(json.dumps(run))
    (tmp_path / "test_network.json").write_text(json.dumps(network))
    assert load_density(tmp_path)[3] == network
    assert "| test (excluding proposals) | 0.400 |" in "\n".join(density_lines(*load_density(tmp_path)))
