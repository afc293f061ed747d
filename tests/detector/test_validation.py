"""data.val_split (detector/training/validation.py): held-out loss during fine-tuning, the best snapshot
kept, held-out images kept apart from the training images, and the stage keys."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from detector.config import load_detector_config
from detector.data import make_synthetic_voc
from detector.features.pyramid import FeatureGrid
from detector.training.context import shared_parts, stage_parts
from detector.training.train import training_settings
from detector.training.validation import BestSnapshot
from helpers import REPO, sppnet_env


def test_best_snapshot_keeps_the_state_of_the_lowest_held_out_loss():
    layer = nn.Linear(2, 2)
    losses = iter([0.9, 0.4, 0.7, 0.6])
    weights = []

    def measure():
        weights.append(layer.weight.detach().clone())
        return next(losses), 0.5
    snap = BestSnapshot(measure, every=3, modules={"head": layer}, split="val", windows=8)
    for it in range(10):
        with torch.no_grad():
            layer.weight.add_(1.0)  # an SGD step
        snap.after(it, 10)
    assert [h["iter"] for h in snap.history] == [2, 5, 8, 9]  # every 3 and the last
    snap.restore()
    assert torch.equal(layer.weight, weights[1])  # the state measured at 0.4, not the last
    assert snap.summary()["best_iteration"] == 5 and snap.summary()["best_loss"] == 0.4


def sppnet(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "detector.commands", *args], text=True, capture_output=True,
                          timeout=timeout, cwd=REPO, env=sppnet_env())


TINY_TRAIN = ["backbone.name=tiny", "features.scales=[96,128]", "proposals.max_windows=30", "proposals.workers=1",
              "finetune.hidden=16", "finetune.batch_size=16", "svm.initial_negatives=10", "bbox.enabled=false",
              "data.flip=false"]


@pytest.mark.parametrize("conv_layers, sampler", [(0, "stream"), (0, "bank"), (1, "stream")])
def test_train_validates_on_the_held_out_split_and_keeps_the_best(conv_layers, sampler, tmp_path):
    """`sppnet train data.val_split=test`: held-out loss every val_every iterations in the log file and
    the report, and the model's head (and trunk) score the held-out windows at the best loss; with
    either fine-tuning sampler."""
    from detector.model import load_model
    from detector.training.train import build_training_context
    from detector.training.validation import held_out_loss, held_out_windows

    data = make_synthetic_voc(tmp_path / "d", num_train=4, num_test=2, seed=3)
    run = tmp_path / "run"
    overrides = [f"data.root={data}", f"workdir={run}", *TINY_TRAIN, "finetune.iterations=10",
                 "finetune.val_every=4", f"finetune.conv_layers={conv_layers}", "data.val_split=test",
                 f"finetune.sampler={sampler}"]
    res = sppnet("train", *overrides)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "held-out loss" in res.stderr
    report = json.loads((run / "train_report.json").read_text())
    assert report["stats"]["finetune"]["sampler"] == sampler
    val = report["stats"]["finetune"]["validation"]
    assert [h["iter"] for h in val["history"]] == [3, 7, 9] and val["split"] == "test" and val["windows"] > 0
    assert val["best_loss"] == min(h["val_loss"] for h in val["history"])
    logged = [json.loads(line) for line in (run / "finetune_loss.jsonl").read_text().splitlines()]
    assert [e["val_loss"] for e in logged if "val_loss" in e] == [h["val_loss"] for h in val["history"]]
    # The model is the best snapshot: its held-out loss is the best one, recomputed here.
    model = load_model(run / "model.pt")
    cfg = load_detector_config(None, overrides)
    ctx = build_training_context(cfg, progress=False)
    ctx.propose()
    features = ctx.features
    features.backbone.load_state_dict(model.backbone.state_dict())
    pool5 = features.current_pool5 if conv_layers else features.pool5
    loss, acc = held_out_loss(model.head, *held_out_windows(ctx.validation_samples(cfg.finetune), pool5))
    assert loss == pytest.approx(val["best_loss"], abs=2e-5) and acc == pytest.approx(val["best_accuracy"], abs=1e-4)


def test_validation_images_must_be_held_out(tmp_path):
    data = make_synthetic_voc(tmp_path / "d", num_train=3, num_test=1, seed=3)
    (data / "ImageSets" / "Main" / "mixed.txt").write_text("000003\n000001\n")
    res = sppnet("train", f"data.root={data}", f"workdir={tmp_path / 'run'}", *TINY_TRAIN, "data.val_split=mixed")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "error:" in res.stderr and "data.val_split 'mixed' shares 1 image(s)" in res.stderr
    assert "000001" in res.stderr and str(data) in res.stderr
    res = sppnet("train", f"data.root={data}", f"workdir={tmp_path / 'run'}", *TINY_TRAIN,
                 "data.val_split=trainval")
    assert res.returncode == 2 and "data.val_split 'trainval' is the training split" in res.stderr


def test_only_a_validation_split_keys_fine_tuning():
    cfg = load_detector_config(None, ["finetune.conv_layers=1"])
    shared = shared_parts(training_settings(cfg), ["a"], {"x": "d1"}, "b0", FeatureGrid(stride=16, offset=0.0))
    finetune = {"finetune": cfg.finetune}
    plain = stage_parts(shared, finetune, cfg.data, 1, 4800)
    assert "val_every" not in plain["finetune"] and "prefix_cache" not in plain["finetune"]
    held = {"split": "val", "images": {"y": "d2"}}
    keyed = stage_parts(shared, finetune, cfg.data, 1, 4800, held)
    assert keyed["finetune"]["validation"] == held and keyed["finetune"]["val_every"] == 100
    other = stage_parts(shared, finetune, cfg.data, 1, 4800, {"split": "val", "images": {"y": "d3"}})
    assert other != keyed
