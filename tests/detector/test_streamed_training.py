"""`sppnet train` with the streamed samplers (issue 29): the report says how many windows
fine-tuning and box regression used, from how many images, also under tiny memory settings."""
from __future__ import annotations

import json
import subprocess
import sys

from detector.data import load_dataset, make_synthetic_voc
from detector.training.context import training_gt

from helpers import REPO, sppnet_env

TINY = ["backbone.name=tiny", "features.scales=[128]", "finetune.hidden=32", "finetune.iterations=60",
        "finetune.batch_size=32", "proposals.max_windows=40", "proposals.workers=1", "svm.initial_negatives=20"]


def sppnet(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "detector.commands", *args], text=True, capture_output=True,
                          timeout=600, cwd=REPO, env=sppnet_env())


def test_tiny_memory_settings_still_train_on_every_image(tmp_path):
    data = make_synthetic_voc(tmp_path / "d", num_train=6, num_test=0, seed=7)
    res = sppnet("train", "--no-progress", f"data.root={data}", f"workdir={tmp_path / 'run'}", *TINY,
                 "finetune.prefetch=1", "finetune.bank_max_mb=0.001", "bbox.normal_equations_max_mb=0.000001")
    assert res.returncode == 0, res.stderr
    stats = json.loads((tmp_path / "run" / "train_report.json").read_text())["stats"]
    # The images with a non-difficult object, and their mirrors (difficult objects do not train).
    records = 2 * sum(len(training_gt(r)[0]) > 0 for r in load_dataset(data, "trainval"))
    assert records >= 8
    ft, bbox = stats["finetune"], stats["bbox"]
    assert ft["sampler"] == "stream" and ft["images"] == ft["eligible_images"] == records
    assert 0 < ft["distinct_windows"] <= ft["eligible_windows"]
    # Box regression: every window over min_iou of every image, in passes of one class.
    assert bbox["images"] == bbox["eligible_images"] == records
    assert bbox["distinct_windows"] == bbox["eligible_windows"] > records
    # The bank under the same budget: one window of a kind per image, from every image.
    res = sppnet("train", "--no-progress", f"data.root={data}", f"workdir={tmp_path / 'bank'}", *TINY,
                 "finetune.sampler=bank", "finetune.bank_max_mb=0.001", "bbox.max_per_image=2")
    assert res.returncode == 0, res.stderr
    stats = json.loads((tmp_path / "bank" / "train_report.json").read_text())["stats"]
    assert stats["finetune"]["sampler"] == "bank" and stats["finetune"]["distinct_windows"] <= 2 * records
    assert stats["finetune"]["images"] == records and stats["finetune"]["eligible_windows"] == ft["eligible_windows"]
    assert stats["bbox"]["distinct_windows"] <= 2 * records < stats["bbox"]["eligible_windows"]


def test_an_unknown_sampler_is_one_error_line(tmp_path):
    res = sppnet("train", f"workdir={tmp_path / 'run'}", "finetune.sampler=pool")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "error: " in res.stderr and "finetune.sampler 'pool' must be one of stream, bank" in res.stderr
