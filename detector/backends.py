"""Where the per-image work runs: this machine ("local", the default) or a Ray cluster.

Three stages are a map over images and nothing else: selective search, the
conv5 cache and test-set inference. With the local backend they run as
before (a process pool for proposals, this process for the network). With
``ray`` the same per-image work runs as Ray tasks over shards of images, and
the results come back to this process, which writes the same content-keyed
cache entries as the local path: a Ray run and a local run resume each other.

Ray is an optional extra (``pip install 'sppnet[ray]'``); nothing here
imports it until a Ray backend is built.
"""
from __future__ import annotations

import argparse
from contextlib import contextmanager
from typing import Iterator

# The options and the error live in their own module (ray_backend reads them too);
# they are re-exported here, where callers build a backend from them.
from .backend_options import BACKENDS, BackendError, BackendOptions

__all__ = ["BACKENDS", "BackendError", "BackendOptions", "build_backend", "add_backend_arguments",
           "backend_options", "open_backend"]


def build_backend(options: BackendOptions | None):
    """None for the local backend (callers keep their own path), else a connected
    :class:`detector.ray_backend.RayBackend`."""
    if options is None or options.name == "local":
        return None
    from .ray_backend import RayBackend

    return RayBackend(options)


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """``--backend``, ``--ray-address``, ``--ray-shard-size``, ``--ray-threads``."""
    g = parser.add_argument_group("where the per-image work runs")
    g.add_argument("--backend", choices=BACKENDS, default="local",
                   help="local: this machine's processes (default); ray: Ray tasks over shards of images")
    g.add_argument("--ray-address", default="",
                   help="Ray cluster to join (auto, <head>:6379, ray://<head>:10001; default: start a "
                        "private Ray on this machine)")
    g.add_argument("--ray-shard-size", type=int, default=BackendOptions.shard_size, help="images per Ray task")
    g.add_argument("--ray-threads", type=int, default=BackendOptions.threads,
                   help="torch/OpenCV threads per Ray task (and CPUs it reserves)")


def backend_options(args: argparse.Namespace) -> BackendOptions:
    """The options the command line asks for, checked (call it before any work)."""
    if args.backend != "ray" and args.ray_address:
        raise BackendError("--ray-address needs --backend ray")
    return BackendOptions(args.backend, args.ray_address, args.ray_shard_size, args.ray_threads)


@contextmanager
def open_backend(options: BackendOptions) -> Iterator[object]:
    """The backend (None: local), shut down afterwards."""
    backend = build_backend(options)
    try:
        yield backend
    finally:
        if backend is not None:
            backend.shutdown()
