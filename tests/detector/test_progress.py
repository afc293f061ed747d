"""detector/progress.py: a bar on a terminal, plain lines at intervals and at the end otherwise."""
import io
import logging

import pytest
from tqdm import tqdm

from detector.progress import LoggedProgress, format_duration, format_rate, progress_of


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def logged(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "detector.progress"]


def test_a_terminal_gets_the_tqdm_bar_and_no_log_lines(caplog):
    caplog.set_level(logging.INFO)
    term = Terminal()
    bar = progress_of(range(3), desc="test", unit="img", stream=term)
    assert isinstance(bar, tqdm)
    assert list(bar) == [0, 1, 2]
    assert "\r" in term.getvalue() and "3/3" in term.getvalue()
    assert logged(caplog) == []


@pytest.mark.parametrize("enabled", [True, False])
def test_a_file_gets_no_bar_and_one_end_line(caplog, enabled):
    caplog.set_level(logging.INFO)
    stream = io.StringIO()  # no isatty() -> True: a redirected stderr
    bar = progress_of(range(4), desc="test", unit="img", enabled=enabled, stream=stream)
    assert isinstance(bar, LoggedProgress)
    assert list(bar) == [0, 1, 2, 3]
    assert stream.getvalue() == ""
    [line] = logged(caplog)
    assert line.startswith("test: done, 4 img in ") and "\r" not in line


def test_disabled_on_a_terminal_draws_nothing_and_logs_the_end(caplog):
    caplog.set_level(logging.INFO)
    term = Terminal()
    assert list(progress_of(range(2), desc="x", enabled=False, stream=term)) == [0, 1]
    assert term.getvalue() == ""
    assert logged(caplog)[0].startswith("x: done, 2 it in ")


def test_interval_lines_every_interval_seconds_then_the_end_line(caplog):
    caplog.set_level(logging.INFO)
    clock = FakeClock()
    bar = LoggedProgress(range(10), "fine-tune fc", "it", None, interval=30.0, clock=clock)
    for i in bar:
        clock.now += 10.0  # each item takes 10 s: a line after items 3, 6 and 9
        if i == 4:
            bar.set_postfix(loss="0.412")
    assert logged(caplog) == [
        "fine-tune fc: 3/10 it (30%), 10.0 s/it, eta 1m 10s",
        "fine-tune fc: 6/10 it (60%), 10.0 s/it, eta 40.0s, loss=0.412",
        "fine-tune fc: 9/10 it (90%), 10.0 s/it, eta 10.0s, loss=0.412",
        "fine-tune fc: done, 10 it in 1m 40s (10.0 s/it), loss=0.412",
    ]


def test_disabled_logs_no_interval_lines(caplog):
    caplog.set_level(logging.INFO)
    clock = FakeClock()
    for _ in LoggedProgress(range(5), "test", "img", None, interval=None, clock=clock):
        clock.now += 100.0
    assert logged(caplog) == ["test: done, 5 img in 8m 20s (100.0 s/img)"]


def test_manual_updates_without_a_total_and_a_stage_stopped_early(caplog):
    caplog.set_level(logging.INFO)
    clock = FakeClock()
    bar = LoggedProgress(None, "SVM collect", "img", None, interval=1.0, clock=clock)
    clock.now += 2.0
    bar.update(8)
    bar.close()
    bar.close()  # a second close (a finally after the loop's own) logs nothing more
    assert logged(caplog) == ["SVM collect: 8 img, 4.0 img/s", "SVM collect: done, 8 img in 2.0s (4.0 img/s)"]
    caplog.clear()
    stopped = LoggedProgress(None, "conv5 cache (ray)", "img", 10, interval=None, clock=clock)
    stopped.update(4)
    stopped.close()  # an error stopped the stage: no "done" line
    empty = LoggedProgress([], "conv5 cache", "img", None, interval=None, clock=clock)
    assert list(empty) == []  # nothing to do: no line either
    assert logged(caplog) == []


def test_formats():
    assert format_rate(2.44, "it") == "2.4 it/s" and format_rate(0.25, "img") == "4.0 s/img"
    assert format_rate(0.0, "it") == "0.0 it/s"
    assert format_duration(4.21) == "4.2s" and format_duration(667) == "11m 07s"
    assert format_duration(7500) == "2h 05m"
