"""`sppnet stats` as a script: see detector/commands/stats.py (`python tools/dataset_stats.py --help`)."""
import sys

from detector.commands.entry import run_cli
from detector.commands.stats import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
