"""Computing the proposals of a dataset split into a :class:`ProposalStore`, in parallel.

Workers are separate processes started with "forkserver" (or "spawn" where
there is none; both safe with OpenCV's and torch's thread pools), each
limited to one OpenCV and one torch thread so N workers use N cores. Each
worker writes its image's entry itself (atomically), so a killed run keeps
everything finished and the next call computes only what is missing or stale.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import os
import select
import sys
import threading
import time
from concurrent.futures import BrokenExecutor, ProcessPoolExecutor
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from detector.fileio import file_digest
from detector.images import ImageReadError, read_image
from detector.progress import progress_of
from detector.records import ImageRecord

from .config import ProposalConfig
from .config import ProposalError
from .search import propose_precomputed, propose_with_config
from .store import ProposalStore


# forkserver where the platform has it (Linux, macOS), spawn elsewhere (Windows):
# both are safe with OpenCV's and torch's thread pools, plain fork is not.
START_METHOD = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


@dataclass(frozen=True)
class _Task:
    image_id: str
    path: str
    width: int
    height: int
    image_digest: str
    store_root: str
    params: dict
    cfg: ProposalConfig


@dataclass(frozen=True)
class _Result:
    image_id: str
    path: str
    num_windows: int = 0
    seconds: float = 0.0
    bad_image: str = ""  # ImageReadError message: the file is not a usable image
    error: str = ""  # anything else: a bug or a bad parameter, always fatal
    boxes: np.ndarray | None = None  # the windows, when the caller writes the entry (Ray)


def worker_context():
    """The multiprocessing context workers start from (:data:`START_METHOD`)."""
    ctx = multiprocessing.get_context(START_METHOD)
    if START_METHOD == "forkserver":
        # The server imports OpenCV once; workers fork from it (no
        # inherited threads or locks, unlike plain fork).
        ctx.set_forkserver_preload(["proposals.compute"])
    return ctx


def init_worker() -> None:
    """One thread per worker: N workers on N cores, not N x N threads. (The searches
    import no torch; a worker that has it loaded all the same gets one torch thread.)"""
    import cv2

    cv2.setNumThreads(1)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def compute_image(task: _Task) -> _Result:
    """Compute and store one image's proposals (runs in a worker process)."""
    res = search_image(task)
    if not (res.error or res.bad_image):
        try:
            ProposalStore(task.store_root, task.params).write(task.image_id, res.boxes,
                                                              task.image_digest, res.seconds)
        except OSError as e:  # e.g. a full disk: reported with the file name in the parent
            return _Result(task.image_id, task.path, error=f"cannot write its cache entry ({e})")
    return dataclasses.replace(res, boxes=None)


def search_image(task: _Task, data: bytes | None = None) -> _Result:
    """One image's proposals, returned with the windows, not stored (``data``: the
    image file's bytes, for a worker that cannot read ``task.path``; see ``detector.ray_backend``)."""
    try:
        if task.cfg.method == "precomputed":
            start = time.perf_counter()
            boxes = propose_precomputed(task.image_id, task.width, task.height, task.cfg)
        else:
            image = read_image(task.path, data)
            start = time.perf_counter()
            boxes = propose_with_config(image, task.cfg)
        seconds = time.perf_counter() - start
        return _Result(task.image_id, task.path, len(boxes), seconds, boxes=boxes)
    except ImageReadError as e:
        return _Result(task.image_id, task.path, bad_image=str(e))
    except Exception as e:  # noqa: BLE001 - reported with the file name in the parent
        return _Result(task.image_id, task.path, error=f"{type(e).__name__}: {e}")


def _init_isolated(owner: int) -> None:
    """:func:`init_worker`, and end this process when process ``owner`` (the Ray worker
    that started it) ends.

    A private Ray's shutdown ends its workers without running their exit
    handlers (which would shut this pool down) and kills only the workers'
    direct children, the forkservers: this process, a forkserver's child,
    was re-parented to init and waited on its task queue for good, one per
    worker of every run. The watch is a thread blocked on a pidfd (Linux
    5.3+; elsewhere nothing watches): it never calls ``rand()``, so the
    searches stay undisturbed.
    """
    init_worker()
    if not hasattr(os, "pidfd_open"):
        return
    try:
        owner_fd = os.pidfd_open(owner)
    except ProcessLookupError:
        os._exit(0)  # the owner is gone already
    except OSError:
        return  # a kernel without pidfds

    def exit_with_owner() -> None:
        select.select([owner_fd], [], [])  # readable once the owner has ended
        os._exit(0)

    threading.Thread(target=exit_with_owner, name="exit-with-owner", daemon=True).start()


_isolated: ProcessPoolExecutor | None = None


def _search_shipped(item: tuple[_Task, bytes | None]) -> _Result:
    """:func:`search_image` on a (task, file bytes) pair (a Ray task's unit of work), run in a
    single-threaded child process of this one.

    OpenCV ranks the regions with the C library's ``rand()``, seeded right
    before each search (``proposals.search``). A Ray worker hosts threads of
    its own that call ``rand()`` too, now and then between the seeding and
    the ranking, which reorders the windows (seen: 1 search in 20). The
    child, forked from a fresh forkserver, has no such threads: its windows
    are the local workers'.
    """
    global _isolated
    for attempt in (1, 2):
        if _isolated is None:
            _isolated = ProcessPoolExecutor(1, mp_context=worker_context(), initializer=_init_isolated,
                                            initargs=(os.getpid(),))
        try:
            return _isolated.submit(search_image, *item).result()
        except BrokenExecutor:  # the child died (e.g. killed for memory): a new one, once
            _isolated = None
            if attempt == 2:
                raise OSError(f"{item[0].path}: the search process died twice") from None


def _with_bytes(task: _Task) -> tuple[_Task, bytes | None]:
    """A task and its image file's bytes, to ship to a worker (none for precomputed boxes)."""
    if task.cfg.method == "precomputed":
        return task, None
    try:
        return task, Path(task.path).read_bytes()
    except OSError:
        return task, None  # the worker's read_image reports the missing file by name


def resolve_workers(workers: int | None, cfg: ProposalConfig, num_tasks: int) -> int:
    """Worker count: the argument, else cfg.workers; 0 means all cores; never more than tasks."""
    n = cfg.workers if workers is None else workers
    if n <= 0:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(n, num_tasks))


def _digest_or_bad(rec: ImageRecord) -> tuple[str, str]:
    """(content digest, "") or ("", error message) for a record's image file."""
    try:
        return file_digest(rec.path), ""
    except OSError as e:
        return "", f"{rec.path}: cannot read image file ({e.strerror or e})"


def _report_bad(res_path: str, message: str, skip: bool) -> None:
    if not skip:
        raise ProposalError(message)
    warnings.warn(f"skipping bad image {res_path}: {message}", RuntimeWarning, stacklevel=3)


def compute_split(records: Sequence[ImageRecord], cfg: ProposalConfig, cache_dir: str | os.PathLike,
                  dataset_key: str, split: str, workers: int | None = None,
                  progress: bool = True, skip_bad_images: bool = False, backend=None) -> ProposalStore:
    """Compute (or resume) the proposals of ``records`` into their store.

    Args:
        records: the split's images (image_id, path, width, height are used).
        cfg: proposal parameters; they and the image contents key the cache.
        cache_dir: root of all proposal caches.
        dataset_key, split: name the store (e.g. "bccd", "test").
        workers: processes (None: cfg.workers; 0: all cores).
        progress: show a progress bar with the ETA (log lines when stderr is not a terminal).
        skip_bad_images: skip an unreadable image with a warning instead of
            raising (training and testing verify their images up front, see
            ``detector.data.verify``, so none reach this point there).
        backend: None (this machine's worker processes) or a
            ``detector.ray_backend.RayBackend``: the searches run as Ray tasks
            and this process writes the same entries as they come back
            (precomputed boxes are looked up here: no search to spread, and
            the workers may not see the file).
    Returns:
        The store; ``store.load(image_id)`` works for every good record.
    Raises:
        ProposalError: a bad image (unless skip_bad_images) or a failed
            search, naming the file.
    """
    store, tasks, good_ids = _plan_split(records, cfg, cache_dir, dataset_key, split, skip_bad_images)
    failed = set()
    desc = f"proposals {dataset_key}/{split}"
    if backend is not None and cfg.method != "precomputed":
        for i, res in backend.map(_search_shipped, tasks, pack=_with_bytes, desc=desc, progress=progress):
            if _check_result(res, skip_bad_images):
                store.write(res.image_id, res.boxes, tasks[i].image_digest, res.seconds)
            else:
                failed.add(res.image_id)
    else:
        bar = progress_of(desc=desc, unit="img", total=len(tasks), enabled=progress and bool(tasks))
        try:
            for res in _run_tasks(tasks, resolve_workers(workers, cfg, len(tasks))):
                bar.update(1)
                if not _check_result(res, skip_bad_images):
                    failed.add(res.image_id)
        finally:
            bar.close()
    store.consolidate([i for i in good_ids if i not in failed])
    return store


def stream_split(records: Sequence[ImageRecord], cfg: ProposalConfig, cache_dir: str | os.PathLike,
                 dataset_key: str, split: str, workers: int | None = None
                 ) -> Iterator[tuple[ImageRecord, np.ndarray]]:
    """(record, windows) for every record, in input order, as soon as each is ready.

    The same store and result as :func:`compute_split` (bad images are
    errors), but the caller can work on the first images while the workers
    search the rest: cached windows come at once, missing ones in the order
    of ``records`` as the pool finishes them. The store is consolidated once
    every record has been yielded.
    """
    store, tasks, good_ids = _plan_split(records, cfg, cache_dir, dataset_key, split, False)
    results = _run_tasks(tasks, resolve_workers(workers, cfg, len(tasks)), ordered=True)
    todo = {t.image_id for t in tasks}
    for rec in records:
        if rec.image_id in todo:
            _check_result(next(results), False)
        yield rec, store.load(rec.image_id)
    store.consolidate(good_ids)


def _plan_split(records, cfg: ProposalConfig, cache_dir, dataset_key: str, split: str,
                skip_bad_images: bool) -> tuple[ProposalStore, list[_Task], list[str]]:
    """The split's store, the searches still to run (in record order) and the usable image ids."""
    cfg.validate()
    store = ProposalStore.open(cache_dir, dataset_key, split, cfg)
    tasks, good_ids = [], []
    for rec in records:
        digest, bad = _digest_or_bad(rec)
        if bad:
            _report_bad(str(rec.path), bad, skip_bad_images)
            continue
        good_ids.append(rec.image_id)
        if not store.is_current(rec.image_id, digest):
            tasks.append(_Task(rec.image_id, str(rec.path), int(rec.width), int(rec.height),
                               digest, str(store.root), store.params, cfg))
    return store, tasks, good_ids


def _check_result(res: _Result, skip_bad_images: bool) -> bool:
    """Raise for a failed search (or a bad image unless skipped); False for a skipped bad image."""
    if res.error:
        raise ProposalError(f"{res.path}: proposals failed: {res.error}")
    if res.bad_image:
        _report_bad(res.path, res.bad_image, skip_bad_images)
        return False
    return True


def _run_tasks(tasks: list[_Task], n_workers: int, ordered: bool = False):
    """Yield a _Result per task, in completion order (``ordered``: task order);
    inline when one worker suffices."""
    if n_workers <= 1 or len(tasks) <= 1:
        for t in tasks:
            yield compute_image(t)
        return
    with worker_context().Pool(n_workers, initializer=init_worker) as pool:
        # chunksize 1: images take 0.1 to 10 s each, so fine-grained balancing
        # beats the per-task overhead (~1 ms).
        run = pool.imap if ordered else pool.imap_unordered
        yield from run(compute_image, tasks, chunksize=1)


def summarize_store(store: ProposalStore, image_ids: Sequence[str]) -> dict:
    """Windows and seconds per image (means and medians) of ``image_ids`` in ``store``."""
    entries = store.entries()
    found = [entries[i] for i in image_ids if i in entries]
    n = np.array([len(e.boxes) for e in found], np.float64)
    s = np.array([e.seconds for e in found], np.float64)
    return {"images": len(found),
            "windows_per_image": float(n.mean()) if len(n) else 0.0,
            "seconds_per_image_mean": float(s.mean()) if len(s) else 0.0,
            "seconds_per_image_median": float(np.median(s)) if len(s) else 0.0}
