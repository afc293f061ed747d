"""Benchmarks: ``python -m bench.<name>`` (see docs/benchmarks.md). They read ../shared."""
