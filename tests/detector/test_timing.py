"""Timed stages add up seconds and tell listeners when they start and end, nested or not."""
from __future__ import annotations

import pytest

from detector.timing import stage_listener, timed_stage


def test_listener_sees_nested_stages_in_order_and_is_removed():
    events, timings = [], {}
    with stage_listener(lambda stage, event: events.append((stage, event))):
        with timed_stage(timings, "svm"):
            with timed_stage(None, "conv"):
                pass
        with pytest.raises(RuntimeError):
            with timed_stage(timings, "bbox"):
                raise RuntimeError("boom")
    with timed_stage(timings, "after"):
        pass
    assert events == [("svm", "start"), ("conv", "start"), ("conv", "end"), ("svm", "end"),
                      ("bbox", "start"), ("bbox", "end")]
    assert set(timings) == {"svm", "bbox", "after"} and all(v >= 0 for v in timings.values())
