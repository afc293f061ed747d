"""Shared entry-point wrapper for tools/: logging set-up and clear errors instead of tracebacks."""
from __future__ import annotations

import logging
import sys
from typing import Callable

from ..backends import BackendError

# Errors that mean "bad input": all subclass ValueError or are OS file errors,
# and their messages name the file and the problem.
# BackendError: Ray missing or its cluster unreachable.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, BackendError)


def run_cli(main: Callable[[], int]) -> int:
    """Run ``main``; print user errors as ``error: ...`` with exit code 2."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return main()
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; completed stages are cached, run the same command again to resume",
              file=sys.stderr)
        return 130
