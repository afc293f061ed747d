"""The Ray backend computes what the local path computes, into the same caches.

One private Ray (2 CPUs, no dashboard) for the module, on the session's
generated set and trained model (tests/conftest.py).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from detector.backends import BackendError, BackendOptions, build_backend
from helpers import REPO

ray = pytest.importorskip("ray", reason="the Ray extra is not installed (make test installs it)")


@pytest.fixture(scope="module")
def backend():
    # Shards of 3 images: several tasks per split, some running at once.
    b = build_backend(BackendOptions(name="ray", shard_size=3, num_cpus=2))
    yield b
    b.shutdown()


def _records(root, split="trainval"):
    from detector.data import VOCDataset
    return list(VOCDataset(root, split))


def test_proposals_equal_local_and_resume_each_other(voc_data, backend, tmp_path):
    from proposals.compute import compute_split
    from proposals.config import ProposalConfig

    records = _records(voc_data)[:10]
    # Local workers are processes (the driver hosts Ray's threads, see _search_shipped).
    cfg = ProposalConfig(workers=2)
    local = compute_split(records, cfg, tmp_path / "local", "voc", "trainval", progress=False)
    # Half computed locally first: Ray must compute only the rest, into the same store.
    mixed_root = tmp_path / "mixed"
    compute_split(records[:4], cfg, mixed_root, "voc", "trainval", progress=False)
    before = {p.name: p.stat().st_mtime_ns for p in (mixed_root).rglob("*.npz")}
    mixed = compute_split(records, cfg, mixed_root, "voc", "trainval", progress=False, backend=backend)
    after = {p.name: p.stat().st_mtime_ns for p in (mixed_root).rglob("*.npz")}
    assert all(after[name] == t for name, t in before.items() if name != "all.npz")
    for r in records:
        np.testing.assert_array_equal(mixed.load(r.image_id), local.load(r.image_id))
    # And a Ray-written store is current for the local path (nothing left to compute).
    store, tasks, _ = __import__("proposals.compute", fromlist=["_plan_split"])._plan_split(
        records, cfg, mixed_root, "voc", "trainval", False)
    assert tasks == []


def test_conv5_cache_equals_local(trained_run, backend, tmp_path):
    from detector.build import build_config_backbone, build_window_features
    from detector.features.pool5 import ImageSource

    cfg = trained_run.cfg
    records = _records(trained_run.data)[:6]
    backbone = build_config_backbone(cfg)
    local = build_window_features(cfg, backbone, tmp_path / "local")
    remote = build_window_features(cfg, backbone, tmp_path / "ray")
    images = [ImageSource.from_record(r) for r in records]
    flipped = [ImageSource.from_record(r, flip=True) for r in records[:2]]
    for im in flipped:
        im.key += "#flip"
    local.prepare(images + flipped, progress=False)
    remote.prepare(images + flipped, progress=False, backend=backend)
    for im in images + flipped:
        a, b = local.cache.load(im.key, im.digest()), remote.cache.load(im.key, im.digest())
        assert a is not None and b is not None
        for ma, mb in zip(a, b):
            assert ma.factor == mb.factor and ma.image_size == mb.image_size
            np.testing.assert_array_equal(ma.features.numpy(), mb.features.numpy())


def test_test_set_detections_equal_local(trained_run, backend, tmp_path, monkeypatch):
    from detector.model import load_trained
    from detector.inference.split_test import EvaluationOptions, run_model_test
    from detector.threads import THREADS_ENV

    monkeypatch.delenv(THREADS_ENV, raising=False)  # tests/conftest.py's pin would override test.threads=1

    # proposals.workers=2: local searches in worker processes (this process hosts Ray's
    # threads, which disturb OpenCV's rand()-ranked windows; see proposals.compute._search_shipped).
    model = load_trained(trained_run.model_path, device="cpu", overrides=["proposals.workers=2", "test.threads=1"])
    detector = model.detector
    cache = tmp_path / "cache"
    local = run_model_test(model, EvaluationOptions("test", tmp_path / "local", cache_dir=cache, progress=False,
                                                    pipeline=False))
    remote = run_model_test(model, EvaluationOptions("test", tmp_path / "ray", cache_dir=tmp_path / "cache_ray",
                                                     progress=False), backend=backend)
    assert list(remote.detections) == list(local.detections)
    from proposals.store import ProposalStore
    a = ProposalStore.open(cache / "proposals", "data", "test", detector.proposals).entries()
    b = ProposalStore.open(tmp_path / "cache_ray" / "proposals", "data", "test", detector.proposals).entries()
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k].boxes, b[k].boxes, err_msg=k)
    for key, dets in local.detections.items():
        other = remote.detections[key]
        assert other.boxes.flags.writeable and other.scores.flags.writeable  # not Ray's read-only buffers
        np.testing.assert_array_equal(other.labels, dets.labels)
        np.testing.assert_allclose(other.boxes, dets.boxes, rtol=0, atol=1e-4)
        np.testing.assert_allclose(other.scores, dets.scores, rtol=0, atol=1e-5)
    assert remote.result.mAP == pytest.approx(local.result.mAP, abs=1e-9)
    assert remote.without_bbox.mAP == pytest.approx(local.without_bbox.mAP, abs=1e-9)


def test_training_on_ray_writes_the_local_conv5_maps(trained_run, backend, tmp_path):
    """Training on Ray with an empty cache: its proposal and conv5 stages run as tasks and
    write what the local run wrote; the stage checkpoints (keyed by content) are reused."""
    import dataclasses
    import shutil

    from detector.training.train import train

    run = tmp_path / "run"
    shutil.copytree(Path(trained_run.cfg.workdir) / "stages", run / "stages")
    cfg = dataclasses.replace(trained_run.cfg, workdir=str(run), cache_dir=str(tmp_path / "cache"))
    result = train(cfg, progress=False, backend=backend)
    assert set(result.reused_stages) == {"finetune", "svm", "bbox"}
    local_root, ray_root = trained_run.cfg.cache_root() / "conv5", tmp_path / "cache" / "conv5"
    local_files = sorted(p.relative_to(local_root) for p in local_root.rglob("*.npz"))
    assert local_files and local_files == sorted(p.relative_to(ray_root) for p in ray_root.rglob("*.npz"))
    for rel in local_files:
        with np.load(local_root / rel) as a, np.load(ray_root / rel) as b:
            assert sorted(a.files) == sorted(b.files)
            for k in a.files:
                np.testing.assert_array_equal(a[k], b[k], err_msg=f"{rel}:{k}")


def test_unreachable_cluster_is_a_clear_error_fast(monkeypatch):
    import socket
    import time

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # this module's Ray is running

    with socket.socket() as sock:  # a port nothing listens on once this closes
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    start = time.perf_counter()
    with pytest.raises(BackendError, match=rf"cannot reach the Ray cluster at 127\.0\.0\.1:{port}: .*ray start"):
        build_backend(BackendOptions(name="ray", address=f"127.0.0.1:{port}"))
    assert time.perf_counter() - start < 5  # Ray alone retries for minutes


def test_ray_init_failure_names_the_address(monkeypatch):
    calls = []

    def refuse(address=None, **kwargs):
        calls.append(address)
        raise ConnectionError("Could not find any running Ray instance.\nmore detail")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(BackendError, match=r"cannot reach the Ray cluster at auto: Could not find any running"):
        build_backend(BackendOptions(name="ray", address="auto"))
    assert calls == ["auto"]


def _refused(address):
    """What Ray 2.5x raises when the cluster refuses this client's token: its
    AuthenticationError, formatted into the text of the cause (ray/_private/node.py)."""
    auth = ray.exceptions.AuthenticationError("RPC error: InvalidAuthToken: Authentication token is missing "
                                              "or incorrect")
    cause = RuntimeError("Failed to connect to GCS. Last connection error: Traceback (most recent call last):\n"
                         '  File "python/ray/includes/common.pxi", line 119, in ray._raylet.check_status\n'
                         f"ray.exceptions.AuthenticationError: {auth}\n")
    try:
        raise cause
    except RuntimeError as e:
        raise ConnectionError(f"Failed to connect to Ray cluster at {address}") from e


def _no_token(address):
    """What ``ray.init`` raises itself in token mode without a token."""
    raise ray.exceptions.AuthenticationError("Token authentication is enabled but no authentication token was found")


@pytest.mark.parametrize("refuse, client_mode, reason, fix", [
    (_refused, "", "RPC error: InvalidAuthToken: Authentication token is missing or incorrect",
     "the cluster uses token authentication, this client does not: set RAY_AUTH_MODE=token, with the "
     "cluster's token in RAY_AUTH_TOKEN"),
    (_refused, "token", "RPC error: InvalidAuthToken: Authentication token is missing or incorrect",
     "this client's token is missing or not the cluster's: put the cluster's token in RAY_AUTH_TOKEN"),
    (_no_token, "token", "Token authentication is enabled but no authentication token was found",
     "this client's token is missing or not the cluster's: put the cluster's token in RAY_AUTH_TOKEN")])
def test_an_authentication_refusal_gives_rays_reason_and_the_setting(monkeypatch, refuse, client_mode, reason, fix):
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda address=None, **kwargs: refuse("192.0.2.7:6391"))
    monkeypatch.setattr("detector.ray_backend.check_reachable", lambda address: None)
    monkeypatch.setenv("RAY_AUTH_MODE", client_mode)
    with pytest.raises(BackendError) as e:
        build_backend(BackendOptions(name="ray", address="127.0.0.1:6391"))
    message = str(e.value)
    assert message.startswith(f"the Ray cluster at 127.0.0.1:6391 refused this client: {reason} (")
    assert fix in message and "\n" not in message and "cannot reach" not in message


def test_command_line_backend_errors(tmp_path, capsys):
    from detector.commands import propose

    from detector.commands.entry import run_cli
    code = run_cli(lambda: propose.main(["--data", str(tmp_path), "--split", "test",
                                         "--ray-address", "auto"]))
    assert code == 2 and "--ray-address needs --backend ray" in capsys.readouterr().err


def test_bad_options_are_refused():
    with pytest.raises(BackendError, match="backend 'spark'"):
        BackendOptions(name="spark")
    with pytest.raises(BackendError, match="shard_size"):
        BackendOptions(name="ray", shard_size=0)
    assert build_backend(BackendOptions()) is None  # local: callers keep their own path


def test_missing_ray_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(BackendError, match=r"pip install 'sppnet\[ray\]'"):
        build_backend(BackendOptions(name="ray"))


def test_local_path_never_imports_ray():
    code = ("import sys, detector.training.train, detector.inference.split_test, detector.commands, proposals.compute; "
            "from detector.backends import build_backend, BackendOptions; build_backend(BackendOptions()); "
            "sys.exit(1 if 'ray' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0
