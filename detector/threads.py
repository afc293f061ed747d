"""The thread policy: how many intra-op threads each stage of a test run uses.

On 2 cores shared with anything else, torch's default (one OpenMP thread per
core for every op) collapses: each op is a parallel region whose closing
barrier waits for a time slice of every thread, so a stage made of hundreds
of small ops (the pooling engine; MobileNetV2's depthwise convolutions) runs
10-150x slower under load than quiet (docs/benchmarks_speed.md). The policy:

- **the pooling engine runs single-threaded** (:data:`POOL_THREADS`): it is
  ~15 small gathers and maxima per chunk of 48 windows, memory-bound; one
  thread avoids a barrier per op;
- **proposal workers are single-threaded** (``proposals.compute.init_worker``):
  N workers use N cores;
- **the network (conv and fc layers) gets the cores that are left**
  (:func:`network_threads`): the cores this process may run on, minus those
  lent to proposal workers running beside it (a pipelined folder run) or
  those other processes keep busy right now (read from the kernel's count of
  runnable tasks), whichever is more, at least one;
- **overrides**: ``SPPNET_THREADS=N`` in the environment, else the test-time
  config field ``test.threads`` (0 = the automatic choice above), fix the
  network's threads.
- **training's long loops** (fine-tuning iterations, the conv5 and prefix
  cache passes, the SVM and box-regression passes) re-choose the network's
  threads as they go (:func:`adapting_threads`): the automatic choice is read
  every step and applied every :data:`ADAPT_PERIOD` steps as the median of
  those reads, so a load that starts or stops mid-stage is followed and a
  passing process is not. On an idle machine that is every core, torch's own
  default: a quiet run computes what it did before. Under load the float
  results differ from a quiet run's in the last digits (a thread count
  changes the order of some sums); ``SPPNET_THREADS=N`` fixes the count for
  runs that must match bit for bit whatever else the machine does.

Everything is scoped: :func:`limit_threads` sets torch's and OpenCV's thread
counts for a block and puts back the caller's afterwards, so a detector used
as a library leaves its host process's settings as it found them. (They are
process-wide settings: another Python thread running torch at the same time
sees them for the duration of the block.)
"""
from __future__ import annotations

import os
import statistics
import sys
from collections import Counter
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, TypeVar

import cv2

# Environment override of the network's intra-op threads (a positive integer).
THREADS_ENV = "SPPNET_THREADS"
# The pooling engine's threads. Measured (bench/speed.py, 2000 windows on a
# fresh map per run, 2 cores shared with other work): 2 threads 0.34-2.6 s,
# 1 thread 0.14-0.18 s (docs/benchmarks_speed.md); the issue saw ~3 s against
# 0.02 s with two CPU-bound processes beside it.
POOL_THREADS = 1
# Training loops re-choose their threads every this many steps (the median of
# the automatic choice read at each): ~5 s of conv fine-tuning on 2 cores.
ADAPT_PERIOD = 16
# Linux: the 4th field of /proc/loadavg is "runnable tasks/all tasks" at this instant.
_LOADAVG = "/proc/loadavg"
# Linux: this process's threads, one folder each with its "stat".
_TASKS = "/proc/self/task"


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def busy_cores(own_runnable: int | None = None) -> int:
    """How many cores other work keeps busy at this instant: the kernel's
    runnable-task count minus ``own_runnable``, this process's running threads
    (None: counted from ``/proc/self/task``, at least the caller's one), 0
    where the OS does not say.

    An instantaneous count, not the load average: the 1-minute average lags
    a load that just started or stopped by tens of seconds and counts this
    process's own past work. This process's own threads are left out: the
    OpenMP workers of the previous image's conv layers spin for a while after
    it (their wait policy), and counted as "busy" they halved the next image's
    threads (bench/runtime.py saw every other variant choose 1 thread on an idle machine).
    """
    try:
        with open(_LOADAVG) as f:
            running = int(f.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return 0
    if own_runnable is None:
        own_runnable = max(1, own_running_threads())
    return max(0, running - own_runnable)


def own_running_threads() -> int:
    """This process's threads in state R (running or runnable) now; 0 where the OS does not say."""
    count = 0
    try:
        tasks = os.listdir(_TASKS)
    except OSError:
        return 0
    for tid in tasks:
        try:
            with open(os.path.join(_TASKS, tid, "stat")) as f:
                # "pid (comm) S ...": the state follows the command, which may hold spaces.
                if f.read().rsplit(")", 1)[1].split()[0] == "R":
                    count += 1
        except (OSError, IndexError):
            continue  # a thread that ended meanwhile
    return count


def configured_threads(configured: int = 0) -> int:
    """The fixed thread count asked for: ``SPPNET_THREADS``, else ``configured``; 0 = automatic.

    Raises:
        ValueError: ``SPPNET_THREADS`` is not a positive integer.
    """
    env = os.environ.get(THREADS_ENV, "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            n = 0
        if n <= 0:
            raise ValueError(f"{THREADS_ENV}={env!r}: must be a positive integer (threads of the network)")
        return n
    return max(0, int(configured))


def network_threads(configured: int = 0, reserved: int = 0) -> int:
    """Intra-op threads for the conv and fc layers.

    Args:
        configured: ``test.threads`` (0 = automatic); ``SPPNET_THREADS`` wins.
        reserved: cores lent to work of this run that runs beside the
            network (proposal workers of a pipelined run).
    Returns:
        the fixed count if one is set, else ``available_cores() -
        max(reserved, busy_cores())``, at least 1. (The reserved workers,
        when running, are among the busy tasks: the larger of the two
        counts both them and other processes' work without counting the
        workers twice.)
    """
    fixed = configured_threads(configured)
    if fixed:
        return fixed
    return max(1, available_cores() - max(reserved, busy_cores()))


@contextmanager
def limit_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads and ``n`` OpenCV threads,
    then restore the caller's counts (also when the block raises). Torch's are
    left alone where torch is not loaded (the torch-free runtime sets its
    onnxruntime threads itself)."""
    n = max(1, int(n))
    torch = sys.modules.get("torch")
    torch_before = torch.get_num_threads() if torch is not None else n
    cv_before = cv2.getNumThreads()
    if torch_before != n:
        torch.set_num_threads(n)
    if cv_before != n:
        cv2.setNumThreads(n)
    try:
        yield
    finally:
        if torch is not None and torch.get_num_threads() != torch_before:
            torch.set_num_threads(torch_before)
        if cv2.getNumThreads() != cv_before:
            cv2.setNumThreads(cv_before)


T = TypeVar("T")


def _set_threads(n: int) -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != n:
        torch.set_num_threads(n)
    if cv2.getNumThreads() != n:
        cv2.setNumThreads(n)


def thread_summary(counts: Counter) -> dict[str, int]:
    """``counts`` of :func:`adapting_threads` as a report writes them: {"threads": steps}, by thread count."""
    return {str(n): k for n, k in sorted(counts.items())}


def adapting_threads(items: Iterable[T], counts: Counter | None = None, period: int = ADAPT_PERIOD,
                     choose: Callable[[], int] = network_threads) -> Iterator[T]:
    """Yield ``items``, running the consumer's steps with the network threads the machine has
    free as it goes; restore the caller's counts at the end (also when the loop stops early).

    Before the first item the count is the median of 3 reads of ``choose`` (the automatic
    choice, :func:`network_threads`); then ``choose`` is read before every item and every
    ``period`` items the count becomes the median of those reads. It never exceeds the
    caller's torch thread count (torch's default: the physical cores), so an idle machine
    runs as before. ``SPPNET_THREADS`` fixes it. The count is set before each item is taken,
    so an iterable that computes its items lazily (the SVM features) computes them at it. The
    generator runs in the consumer's thread, where torch's setting applies. ``counts``, when
    given, counts the steps run at each thread count. A consumer that may raise while holding
    the generator closes it (``contextlib.closing``), so the caller's counts come back at once.
    """
    torch = sys.modules.get("torch")
    fixed = configured_threads()
    cap = (torch.get_num_threads() if torch is not None else 0) or available_cores()

    def read() -> int:
        return max(1, min(cap, choose()))

    current = fixed or int(statistics.median_low([read() for _ in range(3)]))
    reads: list[int] = []
    iterator = iter(items)
    with limit_threads(current):  # puts the caller's counts back, whatever the loop set
        while True:
            if not fixed:  # before the next item: a lazy iterable computes it now, at this count
                reads.append(read())
                if len(reads) >= period:
                    current = int(statistics.median_low(reads))
                    reads.clear()
                    _set_threads(current)
            try:
                item = next(iterator)
            except StopIteration:
                return
            if counts is not None:
                counts[current] += 1
            yield item
