"""Session-wide fixtures: one generated VOC set and one tiny detector trained on it.

Tests that need "a trained model" share this one instead of each training
their own (training takes most of the suite's time).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # helpers.py for every test folder

from detector.hugepages import enable_huge_pages  # noqa: E402

enable_huge_pages()  # as the sppnet command does, before torch loads

import torch  # noqa: E402

from detector.threads import THREADS_ENV  # noqa: E402

# Training re-chooses its threads as the machine's load changes (detector/threads.py:
# adapting_threads), and a thread count moves float results in their last digits. Tests that
# compare two trainings bit for bit need one count whatever else the machine runs: torch's
# default, what training uses on an idle machine. (Subprocesses inherit it; tests of the
# automatic choice remove it.)
os.environ.setdefault(THREADS_ENV, str(torch.get_num_threads()))


@dataclass(frozen=True)
class TrainedRun:
    root: Path  # holds data/ and run/
    data: Path
    cfg: object  # detector.config.Config
    result: object  # detector.training.train.TrainResult

    @property
    def model_path(self) -> Path:
        return self.result.model_path


@pytest.fixture(scope="session")
def voc_data(tmp_path_factory) -> Path:
    """A generated VOC-layout set: 40 trainval and 16 test images of 3 shape classes."""
    from detector.data import make_synthetic_voc
    return make_synthetic_voc(tmp_path_factory.mktemp("voc") / "data", num_train=40, num_test=16, seed=3)


@pytest.fixture(scope="session")
def trained_run(voc_data, tmp_path_factory) -> TrainedRun:
    """A tiny-backbone SPP-net detector trained on ``voc_data`` (1 scale)."""
    from detector.config import load_detector_config
    from detector.training.train import train

    root = tmp_path_factory.mktemp("trained")
    cfg = load_detector_config(None, [
        f"data.root={voc_data}", f"workdir={root / 'run'}", "backbone.name=tiny", "features.scales=[288]",
        "finetune.hidden=256", "finetune.iterations=300",
        "proposals.workers=1", "data.flip=false"])  # mirrors: tests/detector/test_training.py
    return TrainedRun(root, voc_data, cfg, train(cfg, progress=False))
