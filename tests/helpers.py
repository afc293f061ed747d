"""Helpers shared by the tests: the repository's paths, brute-force references, generated files.

Importable from every test module (tests/conftest.py puts this folder on sys.path).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / "tools"


def load_tool(name: str):
    """tools/<name>.py as a module (its ``main(argv)`` runs the tool in-process)."""
    spec = importlib.util.spec_from_file_location(f"tool_{name}", TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def brute_iou(a, b) -> np.ndarray:
    """IoU matrix [len(a), len(b)] of (x1, y1, x2, y2) boxes, one pair at a time in plain Python."""
    out = np.zeros((len(a), len(b)))
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            iw = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
            ih = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
            inter = iw * ih
            union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter
            out[i, j] = inter / union if union > 0 else 0.0
    return out


def random_boxes(rng: np.random.Generator, n: int, extent: float = 100.0, min_side: float = 1.0,
                 max_side: float = 50.0) -> np.ndarray:
    """float32 [n, 4] boxes with corners in [0, extent) and sides in [min_side, max_side)."""
    xy = rng.uniform(0, extent, size=(n, 2))
    wh = rng.uniform(min_side, max_side, size=(n, 2))
    return np.concatenate([xy, xy + wh], 1).astype(np.float32)


def write_noise_image(path: Path, seed: int = 0, size: tuple[int, int] = (128, 96)) -> Path:
    """A lossless PNG (or any PIL format by suffix) of uniform noise, reproducible from ``seed``."""
    arr = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


def small_detector(with_regressors: bool = True):
    """An untrained two-class detector ("a", "b") on the tiny backbone, built in well under a
    second: for runs whose detections do not matter."""
    return small_model(with_regressors).detector


def small_model(with_regressors: bool = True):
    """:func:`small_detector` with its config (a ``detector.model.TrainedModel``): for model files
    (``save_model(path, model.detector, model.config)``) and command-line runs."""
    from detector.training.bbox_regression import train_box_regressors
    from detector.build import build_config_backbone, build_detector
    from detector.config import load_detector_config
    from detector.heads import FCHead
    from detector.model import TrainedModel
    from detector.features.pyramid import SpatialPyramidPool
    from detector.training.svm import LinearSVMs

    cfg = load_detector_config(None, ["backbone.name=tiny", "features.scales=[96]", "finetune.hidden=32"])
    backbone = build_config_backbone(cfg)
    dim = SpatialPyramidPool(cfg.pool.levels).output_dim(backbone.out_channels)
    head = FCHead(dim, 32, 2)
    rng = np.random.default_rng(0)
    svms = LinearSVMs(rng.normal(size=(2, 32)).astype(np.float32), rng.normal(size=2).astype(np.float32), 0.5)
    regs = None
    if with_regressors:
        n = 200
        feats = rng.normal(size=(n, dim)).astype(np.float32)
        boxes = np.tile(np.array([[10, 10, 50, 60]], np.float32), (n, 1))
        gt = boxes + rng.normal(size=(n, 4)).astype(np.float32)
        regs = train_box_regressors(feats, boxes, gt, rng.integers(0, 2, n), np.full(n, 0.8, np.float32),
                                    2, cfg.bbox)
    return TrainedModel(build_detector(cfg, ["a", "b"], backbone, head, svms, regs), cfg)


def write_small_model(path: Path, with_regressors: bool = True) -> Path:
    """:func:`small_model` as a model file at ``path``."""
    from detector.model import save_model

    model = small_model(with_regressors)
    save_model(path, model.detector, model.config)
    return path


# -- training contexts on generated data ------------------------------------------------------

def prepared_context(cfg):
    """A ``detector.training.context.TrainingContext`` after the proposal and conv5-cache stages;
    ``ctx.test_config`` is the config it was built from (for the tests: no stage reads it)."""
    from detector.training.train import build_training_context
    ctx = build_training_context(cfg, progress=False)
    ctx.test_config = cfg
    ctx.propose()
    ctx.cache_conv5()
    return ctx


def rules_context(tmp_path: Path, *overrides: str):
    """A prepared context on 3 synthetic images whose first holds 2 difficult objects (seed 3),
    with their mirrors (data.flip) unless an override says otherwise."""
    from detector.config import load_detector_config
    from detector.data import make_synthetic_voc
    data = tmp_path / "d"
    if not data.exists():
        make_synthetic_voc(data, num_train=3, num_test=0, seed=3)
    return prepared_context(load_detector_config(None, [
        f"data.root={data}", f"workdir={tmp_path / 'run'}", f"cache_dir={tmp_path / 'cache'}",
        "backbone.name=tiny", "features.scales=[96]", "proposals.max_windows=30", "proposals.workers=1",
        *overrides]))


# -- running `sppnet` as a user does, and what it leaves behind -------------------------------

def sppnet_env(**extra: str) -> dict:
    """The environment for `python -m detector.commands`: this checkout's package first."""
    import os
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, **extra}


def session_processes(sid: int) -> dict[int, str]:
    """{pid: command line} of the live (not zombie) processes of session ``sid`` (Linux /proc).

    A process keeps its session when it is re-parented to init, so this finds
    what a command left behind wherever it ended up in the process tree.
    """
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            state, _ppid, _pgrp, session = stat[stat.rindex(")") + 2:].split()[:4]
            if int(session) == sid and state != "Z":
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:160]
        except (OSError, ValueError):
            continue  # ended while we looked
    return found


def end_session(sid: int, grace: float) -> dict[int, str]:
    """Wait up to ``grace`` seconds for session ``sid`` to empty; SIGKILL what is left
    (processes this test started) and return it."""
    import os
    import signal
    import time

    deadline = time.monotonic() + grace
    while (left := session_processes(sid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


@dataclass(frozen=True)
class SessionRun:
    returncode: int
    stderr: str
    left: dict  # {pid: command line} still running in its session after it ended
    # With interrupt_when: how the poll went (for a failure message): polls made, the
    # longest gap between two of them (s), and the most processes the session had at one.
    polls: int = 0
    longest_gap: float = 0.0
    most_processes: int = 0

    def poll_summary(self) -> str:
        return (f"{self.polls} polls, longest gap {self.longest_gap:.2f} s, "
                f"at most {self.most_processes} processes in the session")


def run_sppnet_session(*args, env: dict | None = None, timeout: float = 180, grace: float = 20,
                       interrupt_when=None) -> SessionRun:
    """`sppnet ARGS` in a session of its own; afterwards, what of that session still runs.

    ``interrupt_when(processes)``: a predicate on the session's processes; once
    it holds, Ctrl-C (SIGINT to the foreground process group, as a terminal
    sends it). Every wait is bounded; whatever outlives ``grace`` is killed
    (and reported in ``left``).
    """
    import os
    import signal
    import subprocess
    import sys
    import tempfile
    import time

    err = tempfile.TemporaryFile("w+")  # not a pipe: a chatty command must not block on it
    proc = subprocess.Popen([sys.executable, "-m", "detector.commands", *map(str, args)], cwd=REPO,
                            env=env or sppnet_env(), stdout=subprocess.DEVNULL, stderr=err,
                            start_new_session=True)
    polls, longest_gap, most = 0, 0.0, 0
    try:
        if interrupt_when is not None:
            deadline = last = time.monotonic()
            deadline += timeout
            while proc.poll() is None:
                processes = session_processes(proc.pid)
                now = time.monotonic()
                polls, longest_gap, most = polls + 1, max(longest_gap, now - last), max(most, len(processes))
                last = now
                if interrupt_when(processes):
                    break
                if now > deadline:
                    raise TimeoutError(f"sppnet {' '.join(map(str, args))}: never reached the point to interrupt")
                time.sleep(0.2)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        left = end_session(proc.pid, grace)
        err.seek(0)
        stderr = err.read()
        err.close()
    return SessionRun(proc.returncode, stderr, left, polls, longest_gap, most)
