"""Every process a command starts ends when the command ends: on success, on an error
(exit 2) and on Ctrl-C (exit 130), on the local path and with a private Ray.

Each command runs as a user runs it, in a session of its own; afterwards no
process of that session may be left, wherever it was re-parented
(tests/helpers.py: run_sppnet_session). The same check on a Ray cluster the
command joins is in tests/detector/test_ray_cluster.py.
"""
from __future__ import annotations

import shutil
import sys

import pytest

from helpers import run_sppnet_session, sppnet_env

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="lists processes through /proc")

# Searches of 3x upscaled images: a second or more each, time enough to press Ctrl-C.
SLOW = ["proposals.upscale=3", "proposals.max_side=0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from detector.data import make_synthetic_voc
    return make_synthetic_voc(tmp_path_factory.mktemp("procs") / "data", num_train=4, num_test=1, seed=5)


@pytest.fixture(scope="module")
def long_data(tmp_path_factory):
    """The runs to interrupt search 16 images: their workers live ~10 s or more. On 4 images
    (2 per worker, ~5 s) the suite's CI runs sometimes ended before any poll saw the workers."""
    from detector.data import make_synthetic_voc
    return make_synthetic_voc(tmp_path_factory.mktemp("procs_long") / "data", num_train=16, num_test=1, seed=5)


def _propose(data, cache, *extra):
    return ["propose", "--data", data, "--split", "trainval", "--cache", cache, "--no-progress", *extra]


def _forked(n: int):
    """A predicate: at least ``n`` processes are up whose command line is the forkserver's
    (a forkserver and the search processes forked from it)."""
    return lambda processes: sum("multiprocessing.forkserver" in cmd for cmd in processes.values()) >= n


def interrupted(args_of, predicate, env=None, attempts: int = 3):
    """A run of ``args_of(i)`` stopped with Ctrl-C once ``predicate`` holds. On a loaded
    machine a short run can end before the poll sees its workers (it then exits 0, never
    interrupted): such a run is tried again, on a fresh cache, up to ``attempts`` times."""
    for i in range(attempts):
        run = run_sppnet_session(*args_of(i), env=env, interrupt_when=predicate)
        if run.returncode != 0:
            return run
        print(f"attempt {i + 1}: ended (exit 0) before the interrupt; the poll: {run.poll_summary()}")
    return run


def test_local_workers_end_on_success_error_and_ctrl_c(data, long_data, tmp_path):
    ok = run_sppnet_session(*_propose(data, tmp_path / "ok", "--workers", "2"))
    assert ok.returncode == 0, ok.stderr
    assert ok.left == {}

    broken = tmp_path / "broken"
    shutil.copytree(data, broken)
    jpg = sorted((broken / "JPEGImages").glob("*.jpg"))[2]
    jpg.write_bytes(jpg.read_bytes()[:200])
    bad = run_sppnet_session(*_propose(broken, tmp_path / "bad", "--workers", "2"))
    assert bad.returncode == 2 and f"error: {jpg}" in bad.stderr, bad.stderr
    assert bad.left == {}

    stopped = interrupted(lambda i: _propose(long_data, tmp_path / f"int{i}", "--workers", "2", *SLOW),
                          _forked(3))  # the forkserver and 2 workers
    assert stopped.returncode == 130 and "interrupted" in stopped.stderr, \
        f"{stopped.stderr}\nthe last attempt's poll: {stopped.poll_summary()}"
    assert stopped.left == {}


def test_private_ray_ends_on_success_and_ctrl_c(data, long_data, tmp_path):
    """Ray's workers used to leave their search process (forked from their forkserver)
    behind, re-parented to init: two per run. (An error on Ray: test_ray_cluster.py.)"""
    pytest.importorskip("ray", reason="the Ray extra is not installed (make test installs it)")
    env = sppnet_env(HOME=str(tmp_path))  # a private Ray writes ~/.ray/auth_token
    ray = ["--backend", "ray", "--ray-shard-size", "1"]
    ok = run_sppnet_session(*_propose(data, tmp_path / "ok", *ray), env=env)
    assert ok.returncode == 0, ok.stderr
    assert ok.left == {}

    stopped = interrupted(lambda i: _propose(long_data, tmp_path / f"int{i}", *ray, *SLOW), _forked(4),
                          env=env)  # 2 workers: a forkserver and a search each
    assert stopped.returncode == 130 and "interrupted" in stopped.stderr, \
        f"{stopped.stderr}\nthe last attempt's poll: {stopped.poll_summary()}"
    assert stopped.left == {}
