"""`sppnet test` as a script: see detector/commands/test.py (`python tools/test.py --help`)."""
import sys

from detector.commands.entry import run_cli
from detector.commands.test import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
