"""bench/spp_speedup.py: the SPP-vs-R-CNN speed-up record, on a tiny generated model."""
from __future__ import annotations

import json
import statistics
from pathlib import Path
import pytest
from helpers import write_small_model

from bench.spp_speedup import main, summarise
from detector.commands.entry import run_cli
from detector.data import make_synthetic_voc

# small_model()'s settings, as a config file (everything else the defaults).
TINY_CONFIG = "backbone:\n  name: tiny\nfeatures:\n  scales: [96]\nfinetune:\n  hidden: 32\n"


def test_summarise_takes_rcnn_over_spp_per_fc_form():
    seconds = {"spp": {"none": [1.0, 2.0, 4.0], "int8": [0.5, 1.0, 2.0]},
               "rcnn": {"none": [50.0, 60.0, 400.0], "int8": [50.0, 60.0, 400.0]}}
    out = summarise(seconds)
    assert out["median_s_per_image"] == {"spp": {"none": 2.0, "int8": 1.0}, "rcnn": {"none": 60.0, "int8": 60.0}}
    assert out["speedup"] == {"none": 30.0, "int8": 60.0}
    # image by image: 50, 30, 100 (none) and 100, 60, 200 (int8)
    assert out["speedup_per_image"] == {"none": 50.0, "int8": 100.0}


@pytest.fixture()
def tiny(tmp_path):
    """(model file, config file, data folder) of small_model() and a 3-test-image set."""
    data = make_synthetic_voc(tmp_path / "data", num_train=1, num_test=3, seed=1)
    model = tmp_path / "model.pt"
    write_small_model(model)
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    return model, config, data


def test_record_times_both_methods_on_the_same_images(tiny, tmp_path):
    model, config, data = tiny
    out = tmp_path / "rec.json"
    assert main(["--model", str(model), "--config", str(config), "--images", "2", "--cache",
                 str(tmp_path / "cache"), "--out", str(out), f"data.root={data}", "proposals.max_windows=20",
                 "proposals.workers=1"]) == 0
    rec = json.loads(out.read_text())
    test_ids = (data / "ImageSets" / "Main" / "test.txt").read_text().split()
    assert rec["images"] == [f"{i}.jpg" for i in test_ids[:2]]
    assert all(0 < n <= 20 for n in rec["windows_per_image"])
    for method in ("spp", "rcnn"):
        for fc in ("none", "int8"):
            assert len(rec["seconds_per_image"][method][fc]) == 2
            assert "conv" in rec["stage_median_s"][method][fc]
    secs = rec["seconds_per_image"]
    assert rec["speedup"]["int8"] == pytest.approx(statistics.median(secs["rcnn"]["int8"])
                                                   / statistics.median(secs["spp"]["int8"]))
    assert rec["machine"].endswith("no GPU") or "GPU" in rec["machine"]
    assert rec["condition"] == "quiet" or rec["condition"].startswith("under load")
    assert "mode=rcnn" in rec["rcnn_twin"]


def test_a_model_of_another_config_is_refused_in_one_error_line(tiny, tmp_path, capsys):
    model, config, data = tiny
    other = tmp_path / "other.yaml"
    other.write_text(TINY_CONFIG.replace("[96]", "[128]"))
    out = tmp_path / "rec.json"
    argv = ["--model", str(model), "--config", str(other), "--cache", str(tmp_path / "cache"),
            "--out", str(out), f"data.root={data}"]
    assert run_cli(lambda: main(argv)) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {model}: not trained with {other}: features.scales: [96] (model) vs [128] (config)")
    assert not out.exists()


def test_the_weights_file_is_compared_by_the_file_it_names(tmp_path, monkeypatch):
    """A config's relative weights path and a command line's absolute one name one file: the same
    config; another file is not."""
    from bench.spp_speedup import ModelConfigMismatch, check_trained_with
    from detector.config import load_detector_config
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "a.pth").write_bytes(b"")
    (tmp_path / "w" / "b.pth").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    relative = load_detector_config(None, ["backbone.weights=w/a.pth"])
    absolute = load_detector_config(None, [f"backbone.weights={tmp_path / 'w' / 'a.pth'}"])
    check_trained_with(absolute, relative, Path("m.pt"), Path("c.yaml"))
    other = load_detector_config(None, [f"backbone.weights={tmp_path / 'w' / 'b.pth'}"])
    with pytest.raises(ModelConfigMismatch, match="backbone.weights"):
        check_trained_with(other, relative, Path("m.pt"), Path("c.yaml"))
