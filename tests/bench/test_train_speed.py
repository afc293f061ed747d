"""bench/train_speed.py: the record's times and stages come from the run it measured."""
from __future__ import annotations

import json
import time

import pytest

import bench.train_speed as train_speed


def test_the_record_says_when_the_run_started_and_finished(tmp_path, monkeypatch):
    folder = tmp_path / "run_folder"

    def fake_run(command, log):
        time.sleep(1.2)  # the record's clock must see the run's length
        (folder / "run").mkdir()
        report = {"timings": {"proposals": 1.04, "finetune": 2.0, "total": 3.04}, "config": {"seed": 0},
                  "train_images": 2}
        (folder / "run" / "train_report.json").write_text(json.dumps(report))
        return 0, 1.2, 100.0

    monkeypatch.setattr(train_speed, "run_measured", fake_run)
    record = train_speed.main(["--config", "configs/demo.yaml", "--folder", str(folder), "--name", "t",
                               "--out", str(tmp_path / "results")])
    assert json.loads((tmp_path / "results" / "t.json").read_text()) == record
    assert record["started"] < record["finished"]  # ISO UTC strings order as times
    assert record["stages_s"] == {"proposals": 1.0, "finetune": 2.0, "total": 3.0}
    assert record["condition"] == "as found" and record["background_load_processes"] == 0
    with pytest.raises(ValueError, match="not empty"):  # fresh caches only
        train_speed.main(["--config", "configs/demo.yaml", "--folder", str(folder), "--name", "t2",
                          "--out", str(tmp_path / "results")])
