"""bench/voc_scale.py's VOC-density option: its own data and records, and the record's headline fields."""
from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import bench.voc_scale as voc_scale
from detector.data.voc_like import make_voc_like


def test_clutter_runs_keep_their_own_data_caches_and_records():
    plain, clutter = voc_scale.setup_for("plain"), voc_scale.setup_for("clutter")
    # The plain set keeps the folders its records were measured in.
    assert plain.data == voc_scale.RUNS / "data" and plain.results == voc_scale.RESULTS
    assert clutter.data == voc_scale.REPO / "runs/voc_like_dense/data"
    assert clutter.results == voc_scale.RESULTS / "clutter"
    overrides = voc_scale.overrides(clutter, 2500, 100, ["data.flip=true"])
    assert f"data.root={clutter.data}" in overrides and overrides[-1] == "data.flip=true"
    assert f"cache_dir={clutter.runs / 'cache'}" in overrides
    assert f"workdir={clutter.runs / 'train2500'}" in overrides


def test_all_generates_the_clutter_set_and_passes_the_background_to_every_run(monkeypatch):
    made, commands = [], []
    monkeypatch.setattr("detector.data.voc_like.make_voc_like", lambda root, *a, **kw: made.append((root, a, kw)))
    monkeypatch.setattr(voc_scale.subprocess, "run", lambda cmd, **kw: commands.append(cmd))
    assert voc_scale.main(["all", "--background", "clutter", "--sizes", "5011", "2500", "--test", "7",
                           "finetune.seed=1"]) == 0
    root, args, kw = made[0]
    assert root == voc_scale.setup_for("clutter").data and args == (5011, 7) and kw["background"] == "clutter"
    assert [c[c.index("--train") + 1] for c in commands] == ["2500", "5011"]
    for c in commands:
        assert c[c.index("--background") + 1] == "clutter" and c[-1] == "finetune.seed=1"
    assert "--no-test" in commands[0] and "--no-test" not in commands[1]  # tested at the largest size only


def test_record_holds_trainval_images_records_windows_memory_and_stage_seconds(tmp_path, monkeypatch):
    """run_size on a tiny generated set with training faked: the record's headline fields and where it goes."""
    setup = voc_scale.Setup("clutter", tmp_path / "runs", tmp_path / "results")
    make_voc_like(setup.data, num_train=3, num_test=1, background="clutter")
    model = tmp_path / "model.pt"
    model.write_bytes(b"0" * 1024)
    fake = SimpleNamespace(train_images=2, timings={"proposals": 1.5, "svm": 3.0, "total": 4.5}, stats={},
                           windows_per_train_image=1987.5, model_path=model, reused_stages=[])
    monkeypatch.setattr("detector.training.train.train", lambda cfg: fake)
    record = voc_scale.run_size(setup, 2, 10, ["data.flip=true"], test=False, tag="_x")
    written = json.loads((setup.results / "train2_x.json").read_text())
    assert written == json.loads(json.dumps(record))
    assert written["background"] == "clutter" and written["trainval_images"] == 2 and written["records"] == 4
    assert written["windows_per_image"] == 1987.5 and written["timings_s"] == fake.timings
    # The process's own resident set is sampled at least once: a positive, plausible figure.
    assert 0.01 < written["peak_memory_gib"] < 64
    assert written["peak_memory_gib"] == max(written["peak_memory_mb"].values()) / 1024
    assert (setup.data / "ImageSets/Main/train_scaling.txt").read_text().split() == ["000000", "000001"]
    no_flip = voc_scale.run_size(setup, 2, 10, ["data.flip=false"], test=False)
    assert no_flip["records"] == 2 and Path(setup.results / "train2.json").exists()


def test_a_killed_run_leaves_its_finished_stages_and_the_resumed_run_adds_them_in(tmp_path, monkeypatch):
    """A size split across processes: each finished outermost stage is written at once; the
    stage that was running when the run stopped is not; the resumed run's record sums the parts."""
    from detector.timing import timed_stage

    setup = voc_scale.Setup("clutter", tmp_path / "runs", tmp_path / "results")
    make_voc_like(setup.data, num_train=3, num_test=1, background="clutter")
    partial = setup.results / "train2.partial.json"

    def stopped(cfg):
        t: dict = {}
        with timed_stage(t, "finetune"):
            with timed_stage(t, "frozen_prefix_cache"):  # nested: part of fine-tuning's seconds
                time.sleep(0.02)
        assert json.loads(partial.read_text())["parts"][0]["outermost_s"].keys() == {"finetune"}
        with timed_stage(t, "svm"):
            raise KeyboardInterrupt  # stopped inside the SVM stage

    monkeypatch.setattr("detector.training.train.train", stopped)
    with pytest.raises(KeyboardInterrupt):
        voc_scale.run_size(setup, 2, 10, [], test=False)
    first = json.loads(partial.read_text())["parts"]
    assert len(first) == 1 and first[0]["outermost_s"].keys() == {"finetune"}  # not the stage it was inside
    assert first[0]["stages_s"].keys() == {"finetune", "frozen_prefix_cache"}  # nested ones kept too
    assert first[0]["stages_s"]["finetune"] >= first[0]["stages_s"]["frozen_prefix_cache"] >= 0.02
    # Resumed with other settings: refused, the parts kept.
    with pytest.raises(SystemExit, match="other settings"):
        voc_scale.run_size(setup, 2, 99, [], test=False)
    assert partial.exists()
    model = tmp_path / "model.pt"
    model.write_bytes(b"0")
    resumed = SimpleNamespace(train_images=2, timings={"finetune": 0.5, "svm": 3.0, "total": 3.5}, stats={},
                              windows_per_train_image=10.0, model_path=model, reused_stages=["finetune"])
    monkeypatch.setattr("detector.training.train.train", lambda cfg: resumed)
    record = voc_scale.run_size(setup, 2, 10, [], test=False)
    assert record["timings_s"]["finetune"] == pytest.approx(0.5 + first[0]["stages_s"]["finetune"])
    assert record["timings_s"]["frozen_prefix_cache"] == first[0]["stages_s"]["frozen_prefix_cache"]
    assert record["timings_s"]["svm"] == 3.0 and record["timings_s"]["total"] == pytest.approx(
        3.5 + first[0]["stages_s"]["finetune"])
    assert record["stages_from_earlier_parts"] == ["finetune", "frozen_prefix_cache"]
    assert len(record["parts"]) == 2 and record["reused_stages"] == ["finetune"]
    assert record["peak_memory_gib"] == max(record["peak_memory_mb"].values()) / 1024
    assert not partial.exists()  # its parts are in the record now
