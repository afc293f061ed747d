"""Which pyramid levels are pooled from the map and which are reduced from a finer level.

Shared by the torch engine (:mod:`detector.features.pyramid_engine`) and the torch-free
runtime's numpy pooling (:mod:`detector.deploy.pyramid`).
"""
from __future__ import annotations


def plan_levels(levels: tuple[int, ...]) -> tuple[list[int], dict[int, int]]:
    """Split levels into those pooled from the map and those reduced from a
    finer level: {n: m} with m the smallest other level that n divides.

    Bin i of level n is exactly the union of bins k*i .. k*i + k - 1 of level
    m = k*n: the first starts at floor(k*i*w/m) = floor(i*w/n), the last ends
    at ceil(k*(i+1)*w/m) = ceil((i+1)*w/n), and consecutive bins touch or
    overlap. So the max over those k x k bins is the bin's max.
    """
    distinct = sorted(set(levels), reverse=True)
    direct, derived = [], {}
    for n in distinct:
        finer = [m for m in distinct if m != n and m % n == 0]
        if finer:
            derived[n] = min(finer)
        else:
            direct.append(n)
    return direct, derived


def level_places(levels: tuple[int, ...]) -> dict[int, list[int]]:
    """Where each distinct level's bins start among a window's output rows
    (a level given twice is pooled once and copied)."""
    places, start = {}, 0
    for n in levels:
        places.setdefault(n, []).append(start)
        start += n * n
    return places
