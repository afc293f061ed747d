"""The `sppnet` entry point (detector.commands): help with examples, dispatch, exit codes."""
from __future__ import annotations

import configparser
import importlib.util
import subprocess
import sys

import pytest

from detector.commands import COMMANDS, main

from helpers import REPO, sppnet_env
TOOLS = {"train": "train", "test": "test", "detect": "detect", "evaluate": "evaluate",
         "propose": "propose", "stats": "dataset_stats"}


def sppnet(*args):
    """`sppnet ARGS` as a user runs it, on this checkout's package."""
    return subprocess.run([sys.executable, "-m", "detector.commands", *args], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env=sppnet_env())


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
