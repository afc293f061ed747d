"""The `sppnet` entry point (detector.commands): help with examples, dispatch, exit codes, logs."""
from __future__ import annotations

import configparser
import importlib.util
import os
import re
import subprocess
import sys

import pytest

from detector.commands import COMMANDS, main

from helpers import REPO
from reliability_battery import TINY
TOOLS = {"train": "train", "test": "test", "detect": "detect", "evaluate": "evaluate",
         "propose": "propose", "stats": "dataset_stats"}


def sppnet(*args, stderr=None, timeout=120):
    """`sppnet ARGS` as a user runs it, on this checkout's package (``stderr``: an open
    file to redirect it to, as ``2> log``; else captured)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    streams = dict(capture_output=True) if stderr is None else dict(stdout=subprocess.PIPE, stderr=stderr)
    return subprocess.run([sys.executable, "-m", "detector.commands", *args], text=True,
                          timeout=timeout, cwd=REPO, env=env, **streams)


def test_help_lists_every_command_with_an_example():
    res = sppnet("--help")
    assert res.returncode == 0, res.stderr
    for name in COMMANDS:
        assert f"\n  {name} " in res.stdout and f"e.g. sppnet {name} " in res.stdout
    assert "130 interrupted" in res.stdout


def test_bad_input_exits_2_without_traceback(tmp_path):
    res = sppnet("evaluate", "--data", str(tmp_path / "none"), "--split", "test",
                 "--detections", str(tmp_path / "d.json"), "--out", str(tmp_path / "o"))
    assert res.returncode == 2
    assert "error:" in res.stderr and "Traceback" not in res.stderr


def test_usage_errors_exit_2(capsys):
    assert main([]) == 2 and main(["fly"]) == 2
    assert "unknown command 'fly'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # argparse: a missing required option
        main(["stats"])
    assert e.value.code == 2
    assert "usage: sppnet stats" in capsys.readouterr().err


def test_console_script_and_tool_wrappers_point_at_the_commands():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    assert cfg["options.entry_points"]["console_scripts"].split() == ["sppnet", "=", "detector.commands:main"]
    for name, tool in TOOLS.items():
        spec = importlib.util.spec_from_file_location(f"tool_{tool}", REPO / "tools" / f"{tool}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert module.main.__module__ == COMMANDS[name].module


def test_logs_redirected_to_a_file_have_lines_not_carriage_returns(tmp_path):
    """Issue 25: with stderr in a file, each stage logs plain lines instead of a redrawn tqdm bar."""
    from detector.data import make_synthetic_voc

    data = make_synthetic_voc(tmp_path / "data", num_train=10, num_test=4, seed=3)
    runs = {"train": ["train", f"data.root={data}", f"workdir={tmp_path / 'run'}", *TINY],
            "test": ["test", "--model", str(tmp_path / "run" / "model.pt"), "--data", str(data),
                     "--split", "test", "--out", str(tmp_path / "t")]}
    stages = {"train": ["check images", "proposals data/trainval", "conv5 cache", "pool training windows",
                        "fine-tune fc", "SVM collect", "SVM mining 1/1"],
              "test": ["check images", "test"]}
    for name, args in runs.items():
        log = tmp_path / f"{name}.log"
        with open(log, "w") as stream:
            res = sppnet(*args, stderr=stream, timeout=600)
        text = log.read_bytes().decode()  # bytes: reading as text would turn "\r" into "\n"
        assert res.returncode == 0, text
        assert "\r" not in text
        for stage in stages[name]:
            assert re.search(rf"^INFO detector.progress: {re.escape(stage)}.*: done, \d+ (img|it) in ", text, re.M), \
                (stage, text)
