"""bench/rules_screen.py: a screen's record, and a training rule retrains only the stages it changes."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench.rules_screen import ScreenError, main

RECORD_FIELDS = {"screen", "command", "machine", "conditions", "seed", "code", "model", "overrides",
                 "wall_seconds", "mAP", "AP", "mAP_without_bbox", "versions", "started_utc"}


def screen(workdir, data, tmp_path, name, *extra):
    """Run the tool on ``workdir``'s model; its record."""
    assert main(["--workdir", str(workdir), "--data", str(data), "--name", name, "--scratch",
                 str(tmp_path / "scratch"), "--results", str(tmp_path / "results"), *extra]) == 0
    return json.loads((tmp_path / "results" / f"{name}.json").read_text())


def stage_files(workdir):
    return sorted(p.name for p in (Path(workdir) / "stages").glob("*.pt"))


def test_train_override_retrains_only_the_stages_it_changes(trained_run, tmp_path):
    before = stage_files(trained_run.cfg.workdir)
    rec = screen(trained_run.cfg.workdir, trained_run.data, tmp_path, "strict", "--train", "svm.neg_iou_strict=true")
    assert RECORD_FIELDS | {"train_command", "train_overrides", "reused_stages", "recomputed_stages"} <= set(rec)
    assert rec["train_overrides"] == "svm.neg_iou_strict=true" and rec["overrides"] == ""
    # the SVMs read the negatives rule; box regression does not read the SVMs, fine-tuning runs before both
    assert "finetune" in rec["reused_stages"] and "bbox" in rec["reused_stages"]
    assert rec["recomputed_stages"] == ["svm"]
    assert rec["train_command"].endswith("svm.neg_iou_strict=true")
    assert rec["train_config"] == (f"screen_config.yaml: the config of {trained_run.cfg.workdir}/train_report.json "
                                   "with workdir, data.root set")
    copy = tmp_path / "scratch" / "strict"
    assert json.loads((copy / "train_report.json").read_text())["config"]["svm"]["neg_iou_strict"] is True
    new_svm = set(stage_files(copy)) - set(before)
    assert len(new_svm) == 1 and next(iter(new_svm)).startswith("svm-")
    assert stage_files(trained_run.cfg.workdir) == before  # the original workdir is left as it was
    assert f"--model {copy / 'model.pt'}" in rec["command"]
    assert rec["seed"] == trained_run.cfg.seed and rec["machine"] == "2 CPU cores, no GPU"
    assert 0 <= rec["mAP"] <= 1 and 0 <= rec["mAP_without_bbox"] <= 1
    assert set(rec["AP"]) == {"circle", "square", "triangle"} and "torch" in rec["versions"]


def test_test_override_tests_the_workdir_model_with_it(trained_run, tmp_path):
    # test-time screens write the test cache beside the model: run on a copy, as the tool's help says
    workdir = tmp_path / "copy"
    shutil.copytree(trained_run.cfg.workdir, workdir)
    rec = screen(workdir, trained_run.data, tmp_path, "order", "--test", "test.order=nms_then_regress")
    assert RECORD_FIELDS <= set(rec) and "train_command" not in rec
    assert rec["overrides"] == "test.order=nms_then_regress"
    assert rec["command"].endswith("--cache-features test.order=nms_then_regress")
    assert not (tmp_path / "scratch" / "order").exists()  # nothing retrained, nothing copied
    with pytest.raises(ScreenError, match="order.json: exists already"):
        screen(workdir, trained_run.data, tmp_path, "order")


def test_workdir_without_report_is_an_error(tmp_path):
    with pytest.raises(ScreenError, match="train_report.json: no trained config"):
        main(["--workdir", str(tmp_path), "--data", str(tmp_path), "--name", "x", "--results", str(tmp_path)])
