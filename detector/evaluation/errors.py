"""Error analysis: false positives by kind, missed objects by size, and what fixing each is worth.

The idea of Hoiem et al. ("Diagnosing error in object detectors", ECCV 2012)
and TIDE (Bolya et al., ECCV 2020). Every detection gets one kind, from its
VOC outcome (:mod:`detector.evaluation.matching`) and its overlap with the
ground truth, checked in this order:

* ``tp``: a true positive; ``ignored``: matched to a difficult box;
* ``duplicate``: IoU >= the match threshold with a box of its class that an
  earlier detection already took;
* ``confusion``: IoU >= the match threshold with a box of another class
  (right place, wrong class);
* ``localisation``: the right class with LOCALISATION_IOU <= IoU < the
  match threshold;
* ``confusion`` again: IoU >= LOCALISATION_IOU with a box of another class;
* ``background``: anything else.

A missed object is a non-difficult box no true positive found; it is counted
by size (COCO's ranges, :mod:`detector.evaluation.size_ap`).

What fixing a kind would add (TIDE's "dAP"): the mAP recomputed with that
kind's false positives taken out of the ranking, minus the mAP. For missed
objects: the objects no detection ever found are taken out of the positives
(TIDE's oracle for misses). Counts are given at an operating point (score >=
threshold) and over the whole ranking; ``walk`` counts the false positives
ranked before each class reaches a recall, as AP meets them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from detector.evaluation.matching import MatchedDetections, class_aps, mean_ap
from detector.evaluation.size_ap import SIZE_RANGES, areas, size_of

# TIDE's background threshold t_b: below this IoU a box is not "near" an object.
LOCALISATION_IOU = 0.1
FP_KINDS = ("localisation", "duplicate", "confusion", "background")
KINDS = ("tp", "ignored") + FP_KINDS
WALK_RECALLS = tuple(np.round(np.arange(0.1, 1.01, 0.1), 2).tolist())


@dataclass(frozen=True)
class ErrorBreakdown:
    """Result of :func:`analyse_errors`. Per-kind counts are summed over classes."""

    score_threshold: float
    fp_at_threshold: dict[str, int]  # false positives with score >= threshold, by kind
    fp_total: dict[str, int]  # over all detections
    fp_by_class: dict[str, dict[str, int]]  # class -> kind -> count at the threshold
    missed_at_threshold: dict[str, int]  # size -> objects without a true positive >= threshold
    missed_total: dict[str, int]  # size -> objects no detection found
    n_gt_by_size: dict[str, int]
    mAP: float
    map_gain: dict[str, float]  # kind (and "missed") -> mAP added by fixing it
    walk_recalls: tuple[float, ...]
    walk: dict[str, list[int]]  # kind -> false positives ranked before each recall, summed over classes

    def to_dict(self) -> dict:
        nan_none = lambda x: None if math.isnan(x) else float(x)
        return {"score_threshold": self.score_threshold, "localisation_iou": LOCALISATION_IOU,
                "false_positives_at_threshold": self.fp_at_threshold,
                "false_positives_total": self.fp_total,
                "false_positives_by_class": self.fp_by_class,
                "missed_at_threshold": self.missed_at_threshold, "missed_total": self.missed_total,
                "ground_truth_by_size": self.n_gt_by_size, "mAP": nan_none(self.mAP),
                "mAP_gain_if_fixed": {k: nan_none(v) for k, v in self.map_gain.items()},
                "walk": {"recall": list(self.walk_recalls), **self.walk}}


def kind_codes(matched: MatchedDetections) -> np.ndarray:
    """The kind of every detection (rules in the module docstring) as int8 [D]
    indices into KINDS: integer counts (bincount) instead of string comparisons."""
    m, thr = matched.matches, matched.iou_threshold
    code = np.full(len(m.labels), KINDS.index("background"), np.int8)
    rules = [  # first rule that applies wins, so they are applied last to first
        (matched.fp & (m.other_iou >= LOCALISATION_IOU), "confusion"),
        (matched.fp & (m.best_iou >= LOCALISATION_IOU), "localisation"),
        (matched.fp & (m.other_iou >= thr), "confusion"),
        (matched.fp & (m.best_iou >= thr), "duplicate"),
        (matched.ignored, "ignored"),
        (matched.tp, "tp"),
    ]
    for mask, name in rules:
        code[mask] = KINDS.index(name)
    return code


def detection_kinds(matched: MatchedDetections) -> np.ndarray:
    """The kind of every detection (rules in the module docstring): an array [D] of KINDS strings."""
    return np.array(KINDS, dtype=object)[kind_codes(matched)]


def found_score(matched: MatchedDetections) -> np.ndarray:
    """float64 [G]: the score of the true positive on each gt box, -inf where none."""
    score = np.full(len(matched.gt_labels), -np.inf)
    hits = np.flatnonzero(matched.tp)
    score[matched.matches.best_gt[hits]] = matched.matches.scores[hits]
    return score


def walk_length(tp: np.ndarray, n_pos: int, recall: float) -> int:
    """How many ranked detections (true-positive flags tp [D]) AP walks through
    until it reaches ``recall`` of ``n_pos`` objects: up to and including the
    true positive that reaches it; all of them if it never does; none for a
    class without objects (AP leaves it out)."""
    wanted = math.ceil(recall * n_pos - 1e-9)  # 0.7 * 10 is 7.000000000000001
    if wanted <= 0:
        return 0
    reached = np.flatnonzero(np.cumsum(tp) >= wanted)
    return int(reached[0]) + 1 if len(reached) else len(tp)


def count_until_recall(kinds: np.ndarray, tp: np.ndarray, n_pos: int, recall: float) -> dict[str, int]:
    """False positives by kind among ranked detections (kinds, tp [D]) up to
    :func:`walk_length`; ``kinds`` are KINDS strings or their codes (:func:`kind_codes`)."""
    seen = kinds[:walk_length(tp, n_pos, recall)]
    if seen.dtype == object:
        return {k: int(np.sum(seen == k)) for k in FP_KINDS}
    return _by_kind(seen)


def _by_kind(codes: np.ndarray) -> dict[str, int]:
    counts = np.bincount(codes, minlength=len(KINDS))
    return {k: int(counts[KINDS.index(k)]) for k in FP_KINDS}


def _by_size(sizes: np.ndarray) -> dict[str, int]:
    return {s: int(np.sum(sizes == i)) for i, s in enumerate(SIZE_RANGES)}


def analyse_errors(matched: MatchedDetections, score_threshold: float,
                   use_07_metric: bool = True) -> ErrorBreakdown:
    """False positives by kind, missed objects by size and the mAP fixing each would add."""
    kinds = kind_codes(matched)
    names = matched.class_names
    above = matched.matches.scores >= score_threshold
    per_class = np.bincount(matched.matches.labels[above] * len(KINDS) + kinds[above],
                            minlength=len(names) * len(KINDS)).reshape(len(names), len(KINDS))
    fp_by_class = {c: {k: int(per_class[i, KINDS.index(k)]) for k in FP_KINDS} for i, c in enumerate(names)}

    positives = ~matched.gt_ignored
    found = found_score(matched)
    sizes = size_of(areas(matched.gt_boxes))
    never_found = positives & ~np.isfinite(found)

    base = mean_ap(class_aps(matched, use_07_metric))
    gain = {k: mean_ap(class_aps(matched, use_07_metric, drop=kinds == KINDS.index(k))) - base for k in FP_KINDS}
    missed_per_class = np.bincount(matched.gt_labels[never_found], minlength=len(names))
    gain["missed"] = mean_ap(class_aps(matched, use_07_metric, n_pos_less=missed_per_class)) - base

    walk = {k: [0] * len(WALK_RECALLS) for k in FP_KINDS}
    for c in range(len(names)):
        order = matched.ranking(c)
        ranked_kinds, ranked_tp, n_pos = kinds[order], matched.tp[order], matched.n_positives(c)
        for j, r in enumerate(WALK_RECALLS):
            counts = count_until_recall(ranked_kinds, ranked_tp, n_pos, r)
            for k in FP_KINDS:
                walk[k][j] += counts[k]
    return ErrorBreakdown(
        score_threshold=float(score_threshold), fp_at_threshold=_by_kind(kinds[above]),
        fp_total=_by_kind(kinds), fp_by_class=fp_by_class,
        missed_at_threshold=_by_size(sizes[positives & (found < score_threshold)]),
        missed_total=_by_size(sizes[never_found]), n_gt_by_size=_by_size(sizes[positives]),
        mAP=base, map_gain=gain, walk_recalls=WALK_RECALLS, walk=walk)
