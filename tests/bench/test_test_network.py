"""bench/test_network.py: the network-alone test passes and what each records."""
from __future__ import annotations

import argparse
from types import SimpleNamespace

from bench.test_network import measured_passes


def test_each_pass_records_its_seconds_per_image_and_the_threads_it_started_with():
    calls = []

    def one_pass(i):
        calls.append(i)
        return SimpleNamespace(seconds_per_image={"fc": 0.123456, "total_excluding_proposals": 0.1 * i}), 2.0 * i

    threads = iter([2, 1, 2])
    model = SimpleNamespace(detector=SimpleNamespace(network_threads=lambda: next(threads)))
    runs = measured_passes(argparse.Namespace(repeats=3), model, one_pass)
    assert calls == [1, 2, 3]  # pass 0 (the proposals) is the caller's
    assert [r["network_threads_at_start"] for r in runs] == [2, 1, 2]
    assert [r["wall_s"] for r in runs] == [2.0, 4.0, 6.0]
    assert runs[0]["seconds_per_image"] == {"fc": 0.1235, "total_excluding_proposals": 0.1}
