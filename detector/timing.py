"""Wall-clock seconds per named stage, added up in a plain dict."""
from __future__ import annotations

import time
from contextlib import contextmanager


@contextmanager
def timed_stage(timings: dict | None, stage: str):
    """Add the seconds spent in the block to ``timings[stage]`` (nothing if timings is None)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        if timings is not None:
            timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start
