"""Wall-clock seconds per named stage, added up in a plain dict.

A monitor (``bench``'s memory sampler, a progress dashboard) can follow
which stage is running by registering a listener with :func:`stage_listener`;
it is called with (stage, "start") and (stage, "end").
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator

_listeners: list[Callable[[str, str], None]] = []


@contextmanager
def timed_stage(timings: dict | None, stage: str):
    """Add the seconds spent in the block to ``timings[stage]`` (nothing if timings is None)."""
    for listener in _listeners:
        listener(stage, "start")
    start = time.perf_counter()
    try:
        yield
    finally:
        if timings is not None:
            timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start
        for listener in _listeners:
            listener(stage, "end")


@contextmanager
def stage_listener(listener: Callable[[str, str], None]) -> Iterator[None]:
    """Call ``listener(stage, "start" | "end")`` around every timed stage inside the block."""
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)
