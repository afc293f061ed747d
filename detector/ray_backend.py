"""Per-image work as Ray tasks over shards of images (``--backend ray``).

One remote function runs any per-image function over a shard of items in a
Ray worker, with the worker's torch and OpenCV threads limited to
``BackendOptions.threads``. The driver (this process) submits a bounded
number of shards at a time (two per task slot of the cluster, so results
never pile up in memory), shows one progress bar with the ETA over images,
and gets the results back in completion order; the caller writes them into
the same content-keyed caches as the local path as each shard arrives, so
an interrupted Ray run keeps every finished shard.

Workers read nothing from the driver's disk: each item carries what it needs
(the image file's bytes, read by the driver when its shard is submitted),
and shared objects (the backbone, the detector) go to the object store once.
The cluster's nodes need this package installed (``pip install 'sppnet[ray]'``).

A task whose worker dies is re-run up to ``max_retries`` times by Ray (also
on an ``OSError`` inside the task); any other exception is a bug and stops
the run, naming the shard's images.
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Iterator, Sequence

from .backend_options import BackendError, BackendOptions
from .progress import progress_of

logger = logging.getLogger(__name__)

# Shards in flight per task slot: one running, one queued.
SHARDS_PER_SLOT = 2


def _run_shard(fn: Callable, items: list, shared: tuple, threads: int) -> list:
    """``[fn(item, *shared) for item in items]`` in a Ray worker, with ``threads`` threads."""
    import os

    import cv2
    import torch

    os.environ["SPPNET_THREADS"] = str(threads)  # an inherited setting must not win over the task's
    cv2.setNumThreads(threads)
    torch.set_num_threads(threads)
    return [fn(item, *shared) for item in items]


# Seconds to wait for a cluster's head to accept a connection (Ray itself retries for minutes).
CONNECT_TIMEOUT_S = 10


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail fast, naming the address, when a "host:port" (or "ray://host:port") cluster
    address does not accept connections ("auto" and other forms are left to Ray)."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        reason = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise BackendError(f"cannot reach the Ray cluster at {address}: {reason} "
                           f"(is Ray running there? start it with: ray start --head)") from None


# What Ray's client-side token authentication reads (Ray 2.5x; see
# https://docs.ray.io/en/latest/ray-security/token-auth.html).
AUTH_MODE_ENV = "RAY_AUTH_MODE"
AUTH_SETTINGS = "the cluster's token in RAY_AUTH_TOKEN, in a file named by RAY_AUTH_TOKEN_PATH or in ~/.ray/auth_token"


def connect_error(e: BaseException, address: str) -> BackendError:
    """The one-line error for a failed ``ray.init``, with Ray's own reason.

    Ray wraps the cause: "Failed to connect to Ray cluster at <node ip>" holds,
    as its cause, a RuntimeError whose text ends in the last attempt's
    traceback, whose last line is the reason: an ``AuthenticationError`` when
    the client's token authentication does not match the cluster's (a client
    in token mode without a token gets that error from ``ray.init`` itself).
    That reason, and for authentication the settings that fix it, go in the
    message.
    """
    where = f"the Ray cluster at {address}" if address else "a local Ray"
    first = _line(e, 0)
    innermost = e
    while innermost.__cause__ is not None:
        innermost = innermost.__cause__
    reason = _line(innermost, -1) if innermost is not e else first
    if type(e).__name__ == "AuthenticationError" or "AuthenticationError: " in reason or "InvalidAuthToken" in reason:
        # Ray's text goes on with a paragraph of advice; its first sentence is the reason.
        ray_reason = reason.split("AuthenticationError: ")[-1].split(". ")[0].rstrip(".")
        if os.environ.get(AUTH_MODE_ENV, "").lower() == "token":
            fix = f"this client's token is missing or not the cluster's: put {AUTH_SETTINGS}"
        else:
            fix = (f"the cluster uses token authentication, this client does not: set {AUTH_MODE_ENV}=token, "
                   f"with {AUTH_SETTINGS}")
        return BackendError(f"{where} refused this client: {ray_reason} ({fix})")
    detail = f" ({reason})" if reason not in first else ""
    return BackendError(f"cannot reach {where}: {first}{detail}")


def _line(e: BaseException, index: int) -> str:
    """One non-empty line of an exception's text (Ray puts whole tracebacks in messages)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[index] if lines else type(e).__name__


class RayBackend:
    """A connection to a Ray cluster (or a private one started here) that maps
    functions over images in shards. In a process where Ray is already
    initialised (a library user's own ``ray.init``), that connection is used."""

    name = "ray"

    def __init__(self, options: BackendOptions):
        try:
            import ray
        except ImportError:
            raise BackendError("--backend ray needs Ray, an optional extra: "
                               "pip install 'sppnet[ray]' (or pip install ray)") from None
        self.options = options
        self._ray = ray
        self._owns = False
        if not ray.is_initialized():
            if options.address:
                check_reachable(options.address)
            kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
            try:
                if options.address:
                    ray.init(address=options.address, **kwargs)
                else:
                    ray.init(num_cpus=options.num_cpus or None, **kwargs)
            except Exception as e:  # ConnectionError, ValueError, RuntimeError... from Ray
                raise connect_error(e, options.address) from None
            self._owns = True
        alive = [node for node in ray.nodes() if node.get("Alive")]
        cpus = [node.get("Resources", {}).get("CPU", 0) for node in alive]
        if options.address:
            logger.info("joined the Ray cluster at %s: %d nodes, %g CPUs", options.address, len(alive), sum(cpus))
        biggest = max(cpus, default=0)
        if options.threads > biggest:
            raise BackendError(f"--ray-threads {options.threads}: no node of the Ray cluster has that many CPUs "
                               f"(the largest has {biggest:g}); its tasks could never start")
        self._remote = ray.remote(_run_shard).options(
            num_cpus=options.threads, max_retries=options.max_retries, retry_exceptions=[OSError])

    def task_slots(self) -> int:
        """Tasks the cluster runs at once (its CPUs / threads per task)."""
        cpus = int(self._ray.cluster_resources().get("CPU", 1))
        return max(1, cpus // self.options.threads)

    def map(self, fn: Callable, items: Sequence, shared: tuple = (), pack: Callable | None = None,
            desc: str = "", progress: bool = True) -> Iterator[tuple[int, object]]:
        """(index, ``fn(pack(item), *shared)``) for every item, in completion order.

        ``fn`` must be a module-level function (workers import it by name);
        ``pack`` turns an item into what travels to the worker (e.g. reads its
        image bytes) when its shard is submitted, so only the shards in flight
        are held in memory.
        """
        ray = self._ray
        n, size = len(items), self.options.shard_size
        shards = [range(i, min(i + size, n)) for i in range(0, n, size)]
        if not shards:
            return
        shared_ref = ray.put(tuple(shared))
        limit = SHARDS_PER_SLOT * self.task_slots()
        in_flight: dict = {}
        upcoming = iter(shards)
        bar = progress_of(desc=f"{desc} (ray)", unit="img", total=n, enabled=progress)
        try:
            while True:
                for shard in upcoming:
                    payload = [pack(items[i]) if pack else items[i] for i in shard]
                    in_flight[self._remote.remote(fn, payload, shared_ref, self.options.threads)] = shard
                    if len(in_flight) >= limit:
                        break
                if not in_flight:
                    break
                done, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in done:
                    shard = in_flight.pop(ref)
                    try:
                        results = ray.get(ref)
                    except ray.exceptions.RayError as e:
                        last = (str(e).strip().splitlines() or [type(e).__name__])[-1]
                        raise BackendError(f"{desc}: a Ray task on images {shard.start}-{shard.stop - 1} "
                                           f"failed: {last}") from None
                    yield from zip(shard, results)
                    bar.update(len(shard))
        finally:
            bar.close()
            for ref in in_flight:
                ray.cancel(ref)

    def shutdown(self) -> None:
        """Stop the private Ray this backend started (a cluster it joined keeps running)."""
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
        self._owns = False
