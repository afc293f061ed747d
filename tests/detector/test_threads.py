"""Tests of detector.threads: scoped thread counts, the overrides, and a library call
that leaves the caller's torch settings as it found them."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from detector import threads
from detector.model import load_model
from detector.threads import THREADS_ENV, configured_threads, limit_threads, network_threads


def test_limit_threads_sets_and_restores(monkeypatch):
    before_torch, before_cv = torch.get_num_threads(), cv2.getNumThreads()
    with limit_threads(1):
        assert torch.get_num_threads() == 1
        assert cv2.getNumThreads() == 1
    assert (torch.get_num_threads(), cv2.getNumThreads()) == (before_torch, before_cv)
    with pytest.raises(RuntimeError):
        with limit_threads(1):
            raise RuntimeError("boom")
    assert (torch.get_num_threads(), cv2.getNumThreads()) == (before_torch, before_cv)


def test_overrides_env_then_config(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert configured_threads(0) == 0
    assert configured_threads(3) == 3
    assert network_threads(3) == 3
    monkeypatch.setenv(THREADS_ENV, "2")
    assert network_threads(5) == 2  # the environment wins
    monkeypatch.setenv(THREADS_ENV, "zero")
    with pytest.raises(ValueError, match=THREADS_ENV):
        network_threads()


def test_automatic_threads_leave_reserved_and_busy_cores(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 8)
    monkeypatch.setattr(threads, "busy_cores", lambda own_runnable=None: 0)
    assert network_threads() == 8
    assert network_threads(reserved=3) == 5
    monkeypatch.setattr(threads, "busy_cores", lambda own_runnable=None: 5)
    assert network_threads(reserved=3) == 3  # the workers are among the busy tasks
    monkeypatch.setattr(threads, "busy_cores", lambda own_runnable=None: 20)
    assert network_threads() == 1


def fake_tasks(folder, states):
    """A /proc/self/task stand-in: one thread per state letter."""
    for tid, state in enumerate(states, start=100):
        (folder / str(tid)).mkdir(parents=True)
        (folder / str(tid) / "stat").write_text(f"{tid} (python (a) b) {state} 1 2 3\n")
    return str(folder)


def test_busy_cores_reads_the_runnable_count_less_this_process(tmp_path, monkeypatch):
    fake = tmp_path / "loadavg"
    fake.write_text("3.10 2.00 1.50 4/321 12345\n")
    monkeypatch.setattr(threads, "_LOADAVG", str(fake))
    monkeypatch.setattr(threads, "_TASKS", fake_tasks(tmp_path / "one", "RSS"))
    assert threads.own_running_threads() == 1 and threads.busy_cores() == 3
    # Two of this process's threads running (an OpenMP worker still spinning after the
    # last parallel region): not other work, so not busy.
    monkeypatch.setattr(threads, "_TASKS", fake_tasks(tmp_path / "two", "RSRS"))
    assert threads.own_running_threads() == 2 and threads.busy_cores() == 2
    assert threads.busy_cores(own_runnable=1) == 3
    monkeypatch.setattr(threads, "_TASKS", str(tmp_path / "no_proc"))
    assert threads.busy_cores() == 3  # at least the caller's thread
    monkeypatch.setattr(threads, "_LOADAVG", str(tmp_path / "missing"))
    assert threads.busy_cores() == 0


@pytest.mark.parametrize("setting", [1, 3])
def test_detector_leaves_the_callers_thread_settings(trained_run, setting, monkeypatch):
    """A detector used as a library must not change the host process's torch settings."""
    monkeypatch.setenv(THREADS_ENV, "2")  # the detector's own choice differs from the caller's
    detector = load_model(trained_run.model_path, device="cpu")
    image = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    before = torch.get_num_threads()
    torch.set_num_threads(setting)
    try:
        seen = []
        detector.features.backbone.register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))
        detector.detect(image, windows=np.array([[0, 0, 60, 60], [20, 10, 120, 90]], np.float32))
        assert seen == [2]
        assert torch.get_num_threads() == setting
    finally:
        torch.set_num_threads(before)
