"""`sppnet propose` as a script: see detector/commands/propose.py (`python tools/propose.py --help`)."""
import sys

from detector.commands.entry import run_cli
from detector.commands.propose import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
