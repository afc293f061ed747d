"""`sppnet train` as a script: see detector/commands/train.py (`python tools/train.py --help`)."""
import sys

from detector.commands.entry import run_cli
from detector.commands.train import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
