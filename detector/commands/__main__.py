"""``python -m detector.commands``: the same as the ``sppnet`` command."""
import sys

from detector.commands import main

sys.exit(main())
