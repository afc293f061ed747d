"""bench/voc_scale_report.py: docs/voc2007_scaling.png's memory axis is in GiB (bytes / 2**30)."""
from __future__ import annotations

import pytest

from bench.voc_scale_report import draw


def run_record(images: int, peak_mib: float, flipped: bool = False) -> dict:
    """A training record as bench/voc_scale.py writes it (peak_memory_mb: bytes / 2**20)."""
    return {"train_images": images, "flipped": flipped, "train_wall_s": 600.0,
            "timings_s": {"proposals": 60.0, "svm": 120.0},
            "peak_memory_mb": {"proposals": 512.0, "svm": peak_mib}}


def test_memory_panel_plots_gib_and_says_so():
    fig = draw([run_record(500, 3 * 1024), run_record(1000, 6 * 1024), run_record(500, 4 * 1024, flipped=True)])
    time_axis, memory_axis = fig.axes
    assert memory_axis.get_ylabel() == "peak memory, GiB"
    whole_run = [line for line in memory_axis.get_lines() if line.get_label() == "whole run"][0]
    assert list(whole_run.get_xdata()) == [500, 1000]
    assert list(whole_run.get_ydata()) == pytest.approx([3.0, 6.0])  # 3072 MiB = 3 GiB
    mirrored = [line for line in memory_axis.get_lines() if line.get_label() == "whole run (mirrors)"][0]
    assert list(mirrored.get_xdata()) == [1000] and list(mirrored.get_ydata()) == pytest.approx([4.0])
    assert time_axis.get_ylabel() == "minutes (2 cores)"


def test_the_report_says_when_its_runs_are_not_the_current_recipe(tmp_path):
    from bench.voc_scale_report import recipe_note

    config = tmp_path / "voc.yaml"
    config.write_text("finetune:\n  conv_layers: 2\n")
    fc_only = [{"stats": {"finetune": {"iterations": 10}}}]  # fc fine-tuning records no conv_layers
    note = recipe_note(fc_only, config)
    assert note and "Not the current recipe" in note[0] and "conv_layers` 0" in note[0] and "`configs/voc.yaml` now sets 2" in note[0]
    assert recipe_note([{"stats": {"finetune": {"conv_layers": 2}}}], config) == []
