"""The command-line tools: bad input ends in one clear line and exit code 2, not a traceback.

Run in-process through the same ``run_cli`` wrapper the scripts use (a
subprocess costs seconds of interpreter and torch start-up per case; the
installed ``sppnet`` command's exit codes are checked in a subprocess in
test_commands.py).
"""
import pytest
from helpers import load_tool

from detector.commands.entry import run_cli


def run_tool(name, *args):
    tool = load_tool(name)
    return run_cli(lambda: tool.main([str(a) for a in args]))


@pytest.mark.parametrize("args, message", [
    (["--config", "nope.yaml"], "nope.yaml: config file not found"),
    (["svm.CC=1"], "unknown key(s) CC"),
    (["data.root=/no/such/dataset"], "/no/such/dataset"),
])
def test_train_tool_reports_bad_input(tmp_path, capsys, args, message):
    assert run_tool("train", *args, f"workdir={tmp_path}") == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_detect_and_test_tools_report_a_bad_model_file(tmp_path, capsys):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a model")
    for tool, args in (("detect", ["--input", tmp_path, "--output", tmp_path / "o"]),
                       ("test", ["--out", tmp_path / "t"])):
        assert run_tool(tool, "--model", bad, *args) == 2
        err = capsys.readouterr().err
        assert "model.pt: not a readable model file" in err and "Traceback" not in err
