"""bench/train_speed.py: `sppnet train` from fresh caches, seconds per stage, peak RSS, background load."""
import json
from datetime import datetime

import pytest

from bench import train_speed
from detector.data import make_synthetic_voc


def test_train_speed_records_every_stage_of_a_fresh_run(tmp_path):
    data = make_synthetic_voc(tmp_path / "d", num_train=3, num_test=0, seed=2)
    folder, out = tmp_path / "ts", tmp_path / "records"
    record = train_speed.main(["--config", "configs/demo.yaml", "--folder", str(folder), "--name", "tiny",
                               "--load", "1", "--out", str(out), f"data.root={data}", "backbone.name=tiny",
                               "features.scales=[96]", "proposals.max_windows=30", "proposals.workers=1",
                               "finetune.hidden=16", "finetune.iterations=5", "finetune.batch_size=16",
                               "svm.initial_negatives=10", "data.flip=false"])
    assert json.loads((out / "tiny.json").read_text()) == record
    stages = record["stages_s"]
    assert {"proposals", "conv5_cache", "finetune", "svm", "total"} <= set(stages) and list(stages)[-1] == "total"
    assert stages["total"] <= record["wall_s"] and record["peak_rss_mb"] > 50
    assert record["background_load_processes"] == 1 and record["condition"] == "loaded"
    assert record["machine"] == "2 CPU cores, no GPU" and "torch" in record["versions"]
    assert record["config"]["finetune"]["iterations"] == 5 and f"cache_dir={folder / 'cache'}" in record["command"]
    assert (folder / "cache" / "conv5").is_dir()
    # started as the run began, finished as it ended (whole seconds, UTC)
    started, finished = (datetime.strptime(record[k], "%Y-%m-%dT%H:%M:%SZ") for k in ("started", "finished"))
    assert abs((finished - started).total_seconds() - record["wall_s"]) <= 2.0
    with pytest.raises(ValueError, match="not empty; train_speed measures from fresh caches"):
        train_speed.main(["--config", "configs/demo.yaml", "--folder", str(folder), "--name", "again",
                          "--out", str(out), f"data.root={data}"])
