"""`sppnet detect` as a script: see detector/commands/detect.py (`python tools/detect.py --help`)."""
import sys

from detector.commands.entry import run_cli
from detector.commands.detect import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
