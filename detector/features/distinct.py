"""Score each distinct pool5 vector once: windows that share one get bit-identical scores.

Windows that map to the same cells at the same scale have the same pool5
vector (15-18% of a raccoon image's ~1000-2000 selective-search windows at
688 px). Scored in one batch, their fc/SVM scores still differ in the last
bits (a GEMM treats rows by their place in its blocks), so which of them NMS
keeps depended on those bits: the torch detector and the ONNX runtime,
equal to 1e-6, then kept different windows. Scoring the distinct rows once
and copying the scores makes such ties exact; NMS breaks them by input
order on both paths (:mod:`detector.box_arrays`). It also saves their fc work.
"""
from __future__ import annotations

import numpy as np

# Columns compared first (spread over the vector) to group candidate duplicates;
# candidates are then checked on the whole row, so the choice affects speed only.
PROBE_COLUMNS = 64


def distinct_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the distinct rows of ``rows`` [N, D] and where each row's copy is.

    Returns:
        (first, inverse): int64 [M] the first occurrence of each distinct row, in
        input order, and int64 [N] with ``rows[first][inverse] == rows`` (bit for bit).
    """
    n, dim = rows.shape
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    columns = np.unique(np.linspace(0, dim - 1, min(dim, PROBE_COLUMNS)).astype(np.int64))
    probe = np.ascontiguousarray(rows[:, columns])
    keys = probe.view(np.dtype((np.void, probe.dtype.itemsize * len(columns)))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    owner = first[inverse.ravel()]  # the first row with the same probe columns
    candidates = np.flatnonzero(owner != np.arange(n))
    differ = candidates[(rows[candidates] != rows[owner[candidates]]).any(axis=1)]
    owner[differ] = differ  # same probe columns, different row: its own slot
    keep = np.flatnonzero(owner == np.arange(n))  # input order
    slot = np.empty(n, np.int64)
    slot[keep] = np.arange(len(keep))
    return keep.astype(np.int64), slot[owner]
