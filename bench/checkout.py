"""Running `sppnet` in a subprocess with this checkout's package: the command line and its environment."""
from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def sppnet_command(*args: str) -> list[str]:
    """``sppnet ARGS`` as a command line of this interpreter."""
    return [sys.executable, "-m", "detector.commands", *args]


def checkout_env() -> dict[str, str]:
    """The environment with this checkout first on PYTHONPATH (its package, not an installed one)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
