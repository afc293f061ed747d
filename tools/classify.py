"""`sppnet classify` as a script: see detector/commands/classify.py (`python tools/classify.py --help`)."""
import sys

from detector.commands.entry import run_cli
from detector.commands.classify import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
