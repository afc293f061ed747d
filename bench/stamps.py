"""The time stamp every benchmark record carries: UTC to the second, ISO 8601 (``2026-12-07T21:23:37Z``)."""
from __future__ import annotations

import time


def utc_now() -> str:
    """Now, as benchmark records write ``started`` and ``finished``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
