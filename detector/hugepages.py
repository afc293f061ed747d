"""Transparent huge pages for PyTorch's CPU allocator, for the programs that pool windows.

PyTorch backs large CPU buffers with 2 MB huge pages when
``THP_MEM_ALLOC_ENABLE=1`` is set before torch is imported (read once). The
pooled feature vectors are ~100 MB per image; with 4 KB pages, first-touch
page faults cost about as much as the pooling itself (docs/benchmarks_pooling.md:
pooling 2000 windows took 42-46 ms with it, 86-101 ms without).

Importing the library changes no environment: the programs opt in (the
``sppnet`` command, ``python -m bench.*``, the test suite) by calling
:func:`enable_huge_pages` before anything imports torch. A library user sets
the variable in their own environment.
"""
from __future__ import annotations

import os

VARIABLE = "THP_MEM_ALLOC_ENABLE"


def enable_huge_pages() -> None:
    """Set THP_MEM_ALLOC_ENABLE=1 unless the user set it (a value of 0 turns it off)."""
    os.environ.setdefault(VARIABLE, "1")
