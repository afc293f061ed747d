"""Issue #11's battery: each bad input or reused-workdir case ends in the right result or
in one clear error (exit 2) naming the problem. Cases live in reliability_battery.py,
which also writes docs/reliability.md."""
import pytest

from reliability_battery import CASES, run_case


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case, tmp_path):
    out = run_case(case, tmp_path)
    assert out.code == case.code, out.text
    assert case.expect in out.text, out.text
    assert "Traceback" not in out.text
