"""Progress of a long stage: a tqdm bar on a terminal, plain log lines in a log file.

tqdm redraws its bar with carriage returns several times a second; redirected
to a file, a training run leaves about 600 KB of them that neither read nor
grep as lines. So the bar is drawn only when stderr is a terminal. Otherwise
the stage logs one plain line every ``LOG_INTERVAL_S`` seconds and one when it
finishes (as detectron2 and ultralytics do in logs)::

    INFO detector.progress: fine-tune fc: 400/2000 it (20%), 2.4 it/s, eta 11m 07s, loss=0.412
    INFO detector.progress: fine-tune fc: done, 2000 it in 13m 52s (2.4 it/s), loss=0.198

With progress disabled (``--no-progress``) there is no bar and no interval
line, only the line saying the stage finished and how long it took.
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Callable, Iterable, Iterator

from tqdm import tqdm

logger = logging.getLogger(__name__)

# A line every half minute: about 120 lines for an hour-long stage, and a
# stalled stage shows within a minute.
LOG_INTERVAL_S = 30.0


def progress_of(iterable: Iterable | None = None, *, desc: str, unit: str = "it", total: int | None = None,
             enabled: bool = True, stream=None) -> "tqdm | LoggedProgress":
    """Wrap ``iterable`` (or count ``update`` calls) for a stage called ``desc``.

    A tqdm bar when ``enabled`` and ``stream`` (default: sys.stderr) is a
    terminal; otherwise a :class:`LoggedProgress`, which logs interval lines
    only when ``enabled``. Both iterate, ``update(n)``, ``set_postfix(**kw)``
    and ``close()``.
    """
    stream = sys.stderr if stream is None else stream
    if enabled and _is_terminal(stream):
        return tqdm(iterable, desc=desc, unit=unit, total=total, file=stream)
    return LoggedProgress(iterable, desc, unit, total, LOG_INTERVAL_S if enabled else None)


def _is_terminal(stream) -> bool:
    isatty = getattr(stream, "isatty", None)  # some stream replacements have none
    return bool(isatty and isatty())


class LoggedProgress:
    """A stage's progress as log lines: every ``interval`` seconds (never if None)
    and once at its end, when all ``total`` items (or, without a total, the
    iterable) are done. A stage stopped early (an error) logs no end line."""

    def __init__(self, iterable: Iterable | None, desc: str, unit: str, total: int | None,
                 interval: float | None, clock: Callable[[], float] = time.monotonic):
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.desc, self.unit, self.total = iterable, desc, unit, total
        self.interval, self.clock = interval, clock
        self.n = 0
        self.postfix: dict[str, str] = {}
        self.start = self.last = clock()
        self.closed = False

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if self.interval is not None and now - self.last >= self.interval:
            self.last = now
            logger.info("%s", self.interval_line(now))

    def set_postfix(self, **values) -> None:
        self.postfix = {k: str(v) for k, v in values.items()}

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.n and (self.total is None or self.n >= self.total):
            logger.info("%s", self.end_line(self.clock()))

    def interval_line(self, now: float) -> str:
        """``desc: n/total unit (p%), rate, eta t`` (without a total: ``desc: n unit, rate``)."""
        elapsed = now - self.start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        if self.total:
            eta = format_duration((self.total - self.n) / rate) if rate else "?"
            line = (f"{self.desc}: {self.n}/{self.total} {self.unit} ({100 * self.n // self.total}%), "
                    f"{format_rate(rate, self.unit)}, eta {eta}")
        else:
            line = f"{self.desc}: {self.n} {self.unit}, {format_rate(rate, self.unit)}"
        return line + self._postfix()

    def end_line(self, now: float) -> str:
        """``desc: done, n unit in t (rate)``."""
        elapsed = now - self.start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        return (f"{self.desc}: done, {self.n} {self.unit} in {format_duration(elapsed)} "
                f"({format_rate(rate, self.unit)})" + self._postfix())

    def _postfix(self) -> str:
        return "".join(f", {k}={v}" for k, v in self.postfix.items())


def format_rate(rate: float, unit: str) -> str:
    """Items per second, or seconds per item when slower than one a second (as tqdm)."""
    if 0 < rate < 1:
        return f"{1 / rate:.1f} s/{unit}"
    return f"{rate:.1f} {unit}/s"


def format_duration(seconds: float) -> str:
    """``4.2s``, ``11m 07s`` or ``2h 05m``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"
