"""The `sppnet` entry point (detector.commands): help with examples, dispatch, exit codes, logs."""
from __future__ import annotations

import configparser
import re
import subprocess
import sys

import pytest

from detector.commands import COMMANDS, main

from helpers import REPO, load_tool, sppnet_env
from reliability_battery import TINY

from detector.commands.entry import run_cli
TOOLS = {"train": "train", "test": "test", "detect": "detect", "export": "export", "evaluate": "evaluate",
         "propose": "propose", "stats": "dataset_stats", "classify": "classify"}


def sppnet(*args, stderr=None, timeout=120):
    """`sppnet ARGS` as a user runs it, on this checkout's package (``stderr``: an open
    file to redirect it to, as ``2> log``; else captured)."""
    streams = dict(capture_output=True) if stderr is None else dict(stdout=subprocess.PIPE, stderr=stderr)
    return subprocess.run([sys.executable, "-m", "detector.commands", *args], text=True,
                          timeout=timeout, cwd=REPO, env=sppnet_env(), **streams)


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
        assert load_tool(tool).main.__module__ == COMMANDS[name].module


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """An untrained model file: enough for the commands to load it and check overrides."""
    from helpers import write_small_model

    return write_small_model(tmp_path_factory.mktemp("model") / "model.pt", with_regressors=False)


# Options and key=value overrides interleaved as users type them (issue 25: argparse refused
# everything after the first option, e.g. data.root=/d after --no-progress). The argv's last
# word is one the command must have read: the error it leads to names it.
INTERMIXED = {
    "train": (["--config", "{tmp}/c.yaml", "finetune.iterations=150", "--no-progress", "data.root={tmp}/nodata",
               "workdir={tmp}/run"], "{tmp}/nodata"),
    "test": (["--model", "{model}", "test.nms_iou=0.4", "--out", "{tmp}/t", "--no-progress", "backbone.name=zf5"],
             "backbone cannot change at test time"),
    "detect": (["--model", "{model}", "test.nms_iou=0.4", "--input", "{tmp}", "--output", "{tmp}/d",
                "--no-progress", "backbone.name=zf5"], "backbone cannot change at test time"),
    "export": (["--out", "{tmp}/x", "--int8", "--model", "{tmp}/none.pt"], "{tmp}/none.pt: model file not found"),
    "propose": (["--split", "test", "proposals.max_side=0", "--no-progress", "proposals.methd=x"],
                "unknown key(s) methd"),
    # No overrides: options in any order, the data root last.
    "evaluate": (["--split", "test", "--out", "{tmp}/e", "--detections", "{tmp}/d.json", "--data", "{tmp}/nodata"],
                 "{tmp}/nodata"),
    "stats": (["--split", "test", "--format", "voc", "--data", "{tmp}/nodata"], "{tmp}/nodata"),
    "classify": (["train", "train.epochs=1", "--no-eval", "data.root={tmp}/nodata", "workdir={tmp}/run"],
                 "{tmp}/nodata"),
    "demo": (["--out", "{tmp}/demo", "features.scales=[288]", "--no-progress", "finetune.itrations=3"],
             "unknown key(s) itrations"),
}


def run_command(name: str, argv: list[str]) -> int:
    """`sppnet NAME ARGV` in-process; "demo" is tools/demo.py, the README's first command."""
    if name == "demo":
        return run_cli(lambda: load_tool("demo").main(argv))
    return main([name, *argv])


@pytest.mark.parametrize("name", [*COMMANDS, "demo"])
def test_options_and_overrides_in_any_order(name, tmp_path, model_file, capsys):
    (tmp_path / "c.yaml").write_text("finetune:\n  lr: 0.001\n")
    argv, expect = INTERMIXED[name]
    fill = {"tmp": tmp_path, "model": model_file}
    assert run_command(name, [a.format(**fill) for a in argv]) == 2
    err = capsys.readouterr().err
    assert expect.format(**fill) in err and "unrecognized arguments" not in err, err


@pytest.mark.parametrize("name", COMMANDS)
def test_help_still_works(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0 and f"usage: sppnet {name}" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["test", "detect", "evaluate", "propose", "stats"])
def test_required_options_are_still_required_among_overrides(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([name, "test.nms_iou=0.4"])
    assert e.value.code == 2 and "the following arguments are required" in capsys.readouterr().err


def test_a_value_that_looks_like_an_override_belongs_to_its_option(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "a=b.yaml"), f"workdir={tmp_path}"]) == 2
    assert "a=b.yaml: config file not found" in capsys.readouterr().err
    assert main(["stats", "--data", str(tmp_path / "data.root=x"), "--split", "test"]) == 2
    assert "data.root=x: not a VOC-layout folder" in capsys.readouterr().err


def test_logs_redirected_to_a_file_have_lines_not_carriage_returns(tmp_path):
    """Issue 25: with stderr in a file, each stage logs plain lines instead of a redrawn tqdm bar."""
    from detector.data import make_synthetic_voc

    data = make_synthetic_voc(tmp_path / "data", num_train=10, num_test=4, seed=3)
    runs = {"train": ["train", f"data.root={data}", f"workdir={tmp_path / 'run'}", *TINY],
            "test": ["test", "--model", str(tmp_path / "run" / "model.pt"), "--data", str(data),
                     "--split", "test", "--out", str(tmp_path / "t")]}
    stages = {"train": ["check images", "proposals data/trainval", "conv5 cache", "label training windows",
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


def test_detect_screens_the_official_test_time_rules(tmp_path, model_file, capsys):
    # The test-time rules of docs/method.md are key=value overrides of a trained model;
    # the pyramid it was trained with is not.
    from helpers import write_noise_image
    (tmp_path / "in").mkdir()
    write_noise_image(tmp_path / "in" / "a.jpg")
    rules = ["test.order=nms_then_regress", "pool.window_margin=0.4375", "pool.window_scaling=corner",
             "features.scale_rule=side", "features.scales=[96,128]"]
    assert main(["detect", "--model", str(model_file), "--input", str(tmp_path / "in"), "--output",
                 str(tmp_path / "out"), "--no-progress", *rules]) == 0
    assert main(["detect", "--model", str(model_file), "--input", str(tmp_path / "in"), "--output",
                 str(tmp_path / "out2"), "--no-progress", "pool.levels=[2,1]"]) == 2
    assert "error: command line: pool.levels cannot change at test time" in capsys.readouterr().err
