"""The command-line tools: bad input ends in one clear line and exit code 2, not a traceback."""
import subprocess
import sys

import pytest

from helpers import REPO


def run_tool(name, *args):
    return subprocess.run([sys.executable, str(REPO / "tools" / name), *args], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("args, message", [
    (["--config", "nope.yaml"], "nope.yaml: config file not found"),
    (["svm.CC=1"], "unknown key(s) CC"),
    (["data.root=/no/such/dataset"], "/no/such/dataset"),
])
def test_train_tool_reports_bad_input(tmp_path, args, message):
    res = run_tool("train.py", *args, f"workdir={tmp_path}")
    assert res.returncode == 2, res.stderr
    assert message in res.stderr
    assert "Traceback" not in res.stderr


def test_detect_and_test_tools_report_a_bad_model_file(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a model")
    for res in (run_tool("detect.py", "--model", str(bad), "--input", str(tmp_path), "--output", str(tmp_path / "o")),
                run_tool("test.py", "--model", str(bad), "--out", str(tmp_path / "t"))):
        assert res.returncode == 2
        assert "model.pt: not a readable model file" in res.stderr
        assert "Traceback" not in res.stderr
