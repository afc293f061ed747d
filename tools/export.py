"""`sppnet export` as a script: see detector/commands/export.py (`python tools/export.py --help`)."""
import sys

from detector.commands.entry import run_cli
from detector.commands.export import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
