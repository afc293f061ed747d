"""Benchmarks: ``python -m bench.<name>`` (see docs/benchmarks.md). They read ../shared."""
from detector.hugepages import enable_huge_pages

enable_huge_pages()  # before any benchmark imports torch, as the sppnet command does
