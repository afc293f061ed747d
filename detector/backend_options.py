"""Which backend runs the proposal, conv5-cache and test stages, and how to reach it.

Kept apart from :mod:`detector.backends` (which builds the backend) so that
:mod:`detector.ray_backend` can read the options without importing the
module that imports it.
"""
from __future__ import annotations

from dataclasses import dataclass

BACKENDS = ("local", "ray")


class BackendError(RuntimeError):
    """The chosen backend cannot run: Ray missing, or its cluster unreachable."""


@dataclass(frozen=True)
class BackendOptions:
    """How to reach and use the backend (runtime only: nothing here keys a cache).

    name: "local" or "ray".
    address: Ray cluster address ("auto": the cluster this node belongs to;
        "" starts a private Ray on this machine).
    shard_size: images per Ray task (larger: less scheduling overhead; smaller:
        better balance and less lost when a task fails).
    threads: intra-op torch/OpenCV threads per task (1: one task per core).
    max_retries: times Ray re-runs a task whose worker died.
    num_cpus: CPUs of a private Ray (0: all of this machine's).
    """

    name: str = "local"
    address: str = ""
    shard_size: int = 8
    threads: int = 1
    max_retries: int = 3
    num_cpus: int = 0

    def __post_init__(self):
        if self.name not in BACKENDS:
            raise BackendError(f"backend {self.name!r} is not one of {', '.join(BACKENDS)}")
        if self.shard_size < 1 or self.threads < 1 or self.max_retries < 0 or self.num_cpus < 0:
            raise BackendError("backend shard_size and threads must be >= 1, max_retries and num_cpus >= 0")
