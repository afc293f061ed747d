"""An iterator run a bounded number of items ahead in a background thread.

Streamed fine-tuning reads conv5 maps from disk and pools windows for the
next mini-batches while the current one trains (torch and numpy release the
GIL in both). The queue holds at most ``depth`` items, so what is held ahead
is bounded whatever the iterator's length.
"""
from __future__ import annotations

import queue
import threading
from typing import Iterator, TypeVar

T = TypeVar("T")

_DONE = object()
# How often a blocked producer checks whether the consumer has gone.
_POLL_SECONDS = 0.1


class _Failed:
    """An exception raised by the producer, to re-raise in the consumer."""

    def __init__(self, error: BaseException):
        self.error = error


def prefetched(items: Iterator[T], depth: int) -> Iterator[T]:
    """The items of ``items`` in order, produced up to ``depth`` ahead in a background thread.

    An exception in the producer is raised in the consumer at the item where
    it happened; a consumer that stops early (break, exception, garbage
    collection) stops the producer at its next item.
    """
    if depth < 1:
        raise ValueError(f"prefetch depth must be >= 1, got {depth}")
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as e:  # handed to the consumer, which re-raises it
            put(_Failed(e))
            return
        put(_DONE)

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = slots.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()
