"""Pipelined folder inference: selective search for the next images runs in worker
processes while the network works on the current one.

Selective search (~0.6-3 s per image on one core) and the network (~0.2-0.4 s
per image) used to run one after the other in one process. Here
:func:`propose_files` keeps up to ``lookahead`` images' searches running in
a pool of single-threaded worker processes (``proposals.compute``'s set-up:
forkserver, one OpenCV and one torch thread each) and hands back the windows
in input order, so the caller's network runs on image i while the workers
search images i+1 .. i+lookahead. The look-ahead bounds memory: only windows
travel back (the caller decodes the image itself, as the sequential path
does), and at most ``lookahead`` searches are queued at a time.

The windows are the ones :meth:`detector.inference.detector.Detector.propose` computes
for the same file (tested): the pipelined run's detections equal the
sequential run's.
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from proposals.compute import init_worker, resolve_workers, worker_context
from proposals.config import ProposalConfig

# Searches queued per worker: one running and one waiting, so a worker never
# idles while the parent collects a result.
LOOKAHEAD_PER_WORKER = 2


def propose_file(path: str, cfg: ProposalConfig) -> np.ndarray:
    """Selective-search windows of the image at ``path`` (runs in a worker process)."""
    from proposals import propose_with_config

    from ..images import read_image

    return propose_with_config(read_image(path), cfg)


def propose_files(paths: Iterable[Path], cfg: ProposalConfig, workers: int,
                  lookahead: int | None = None) -> Iterator[tuple[Path, Future]]:
    """(path, future of its windows) for each path, in input order, with the
    searches of the next ``lookahead`` paths (default ``workers`` x
    :data:`LOOKAHEAD_PER_WORKER`) already running in ``workers`` processes.

    ``future.result()`` gives float32 [N, 4] windows or raises what the search
    raised (e.g. :class:`detector.images.ImageReadError` for a file that is
    not a readable image). Leaving the loop early cancels what is queued.
    """
    paths = list(paths)
    lookahead = max(1, lookahead or workers * LOOKAHEAD_PER_WORKER)
    pending: deque[tuple[Path, Future]] = deque()
    with ProcessPoolExecutor(max_workers=workers, mp_context=worker_context(), initializer=init_worker) as pool:
        try:
            upcoming = iter(paths)
            for path in upcoming:
                pending.append((path, pool.submit(propose_file, str(path), cfg)))
                if len(pending) >= lookahead:
                    break
            while pending:
                yield pending.popleft()
                nxt = next(upcoming, None)
                if nxt is not None:
                    pending.append((nxt, pool.submit(propose_file, str(nxt), cfg)))
        finally:
            for _, future in pending:
                future.cancel()


def pipeline_workers(cfg: ProposalConfig, num_images: int) -> int:
    """Search processes for a pipelined run: ``proposals.workers`` (0 = all cores), at most one
    per image; 0 when a pipeline would not pay (a single image)."""
    if num_images <= 1:
        return 0
    return resolve_workers(None, cfg, num_images)
