"""Tests of detector.threads: scoped thread counts, the overrides, and a library call
that leaves the caller's torch settings as it found them."""
from __future__ import annotations

from collections import Counter
from contextlib import closing

import cv2
import numpy as np
import pytest
import torch

from detector import threads
from detector.model import load_model
from detector.threads import THREADS_ENV, adapting_threads, configured_threads, limit_threads, network_threads


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


def test_a_training_loop_follows_a_load_that_starts_and_stops_but_not_a_passing_one(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    torch_before, cv_before = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(2)
    # the automatic choice read before each step: idle, one passing process, a load of 1, idle
    free = iter([2, 2, 2] + [2] * 7 + [1] + [2] * 8 + [1] * 8 + [2] * 8 + [2])  # and one before the end
    seen, counts = [], Counter()
    try:
        for _ in adapting_threads(range(32), counts, period=8, choose=lambda: next(free)):
            seen.append(torch.get_num_threads())
        # each 8th step applies the median of the last 8 reads: the passing process (one read
        # of 1) changes nothing; the load of 1 does, from the end of its 8 reads to the next 8's
        assert seen == [2] * 23 + [1] * 8 + [2]
        assert counts == {2: 24, 1: 8}
        assert torch.get_num_threads() == 2  # the caller's count back
    finally:
        torch.set_num_threads(torch_before)
        cv2.setNumThreads(cv_before)


def test_a_training_loop_never_exceeds_the_callers_threads_and_the_environment_fixes_them(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert {torch.get_num_threads() for _ in adapting_threads(range(5), choose=lambda: 8)} == {1}
        torch.set_num_threads(2)
        monkeypatch.setenv(THREADS_ENV, "1")
        reads = []
        assert {torch.get_num_threads() for _ in adapting_threads(range(5), choose=lambda: reads.append(1) or 2)} == {1}
        assert reads == []  # fixed: the load is not read
        assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError):  # a loop that stops early still restores
            for _ in adapting_threads(range(5)):
                raise RuntimeError("boom")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_lazy_item_is_computed_at_the_count_its_step_runs_at_and_an_error_restores(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    free = iter([2, 2, 2, 1, 1, 1, 1])

    def lazily():
        for _ in range(3):
            yield torch.get_num_threads()  # the count while this item is computed

    try:
        steps = list(adapting_threads(lazily(), period=1, choose=lambda: next(free)))
        assert steps == [1, 1, 1]
        with pytest.raises(RuntimeError):
            with closing(adapting_threads(range(5), period=1, choose=lambda: 1)) as todo:
                for _ in todo:
                    raise RuntimeError("boom")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


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
