"""`sppnet evaluate` as a script: see detector/commands/evaluate.py (`python tools/evaluate.py --help`)."""
import sys

from detector.commands.entry import run_cli
from detector.commands.evaluate import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
