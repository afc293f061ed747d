"""One call for every analysis of a test run beyond AP: errors, confusion, F1, AP by size.

:func:`analyse_detections` runs on the same in-memory ground truth and
detections as :func:`~detector.evaluation.voc_ap.evaluate_voc` and returns an
:class:`Analysis`, which :func:`~detector.evaluation.report.write_report`
renders into metrics.json ("analysis"), report.md and report.html.

The operating point (the score threshold of the confusion matrix and of the
"at threshold" counts) is given, or else the threshold with the best F1 over
all classes pooled: detectors' scores have no common scale (SVM margins here,
probabilities elsewhere), so no fixed default would fit them all.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from detector.evaluation.confusion import ConfusionMatrix, confusion_matrix
from detector.evaluation.errors import (FP_KINDS, ErrorBreakdown, analyse_errors, detection_kinds,
                                        found_score)
from detector.evaluation.matching import MatchedDetections, match_records
from detector.evaluation.size_ap import SizeAP, ap_by_size, areas
from detector.evaluation.thresholds import ALL_CLASSES, F1Curve, f1_curves
from detector.records import Detections, ImageRecord

EXAMPLES = 8  # worst false positives and worst misses kept for the report's strip


@dataclass(frozen=True)
class ErrorExample:
    """One error to show: a false positive (its box) or a missed object (its box).

    ``related_box`` is the ground-truth box a false positive overlaps most (of
    its class for duplicate and localisation, of another class for confusion;
    None for background), for a miss None.
    """

    kind: str  # one of FP_KINDS, or "missed"
    image_id: str
    path: str
    class_name: str
    box: tuple[float, float, float, float]
    score: float | None  # None for a miss that no detection of its class reached
    related_box: tuple[float, float, float, float] | None

    def to_dict(self) -> dict:
        return {"kind": self.kind, "image_id": self.image_id, "path": self.path,
                "class": self.class_name, "box": [round(v, 2) for v in self.box],
                "score": self.score,
                "related_box": None if self.related_box is None else [round(v, 2) for v in self.related_box]}


@dataclass(frozen=True)
class Analysis:
    """Result of :func:`analyse_detections`."""

    class_names: tuple[str, ...]
    score_threshold: float
    threshold_rule: str  # how the threshold was chosen
    iou_threshold: float
    errors: ErrorBreakdown
    confusion: ConfusionMatrix
    f1: dict[str, F1Curve]  # per class name and ALL_CLASSES
    size_ap: SizeAP
    examples: tuple[ErrorExample, ...]

    def to_dict(self) -> dict:
        return {"score_threshold": self.score_threshold, "threshold_rule": self.threshold_rule,
                "iou_threshold": self.iou_threshold, "errors": self.errors.to_dict(),
                "confusion_matrix": self.confusion.to_dict(),
                "f1": {k: c.summary() for k, c in self.f1.items()},
                "ap_by_size": self.size_ap.to_dict(),
                "examples": [e.to_dict() for e in self.examples]}


def _box(b) -> tuple[float, float, float, float]:
    return tuple(float(v) for v in b)


def worst_examples(matched: MatchedDetections, gt_records: Sequence[ImageRecord], score_threshold: float,
                   n: int = EXAMPLES) -> tuple[ErrorExample, ...]:
    """The ``n`` highest-scoring false positives, then the ``n`` largest objects
    missed at ``score_threshold``."""
    m, names = matched.matches, matched.class_names
    kinds = detection_kinds(matched)
    fps = np.flatnonzero(np.isin(kinds, FP_KINDS))
    fps = fps[np.argsort(-m.scores[fps], kind="stable")][:n]
    out = []
    for d in fps:
        rec = gt_records[m.image_index[d]]
        related = m.other_gt[d] if kinds[d] == "confusion" else m.best_gt[d]
        out.append(ErrorExample(str(kinds[d]), rec.image_id, str(rec.path), names[m.labels[d]],
                                _box(matched.det_boxes[d]), float(m.scores[d]),
                                None if kinds[d] == "background" or related < 0
                                else _box(matched.gt_boxes[related])))
    found = found_score(matched)
    missed = np.flatnonzero(~matched.gt_ignored & (found < score_threshold))
    missed = missed[np.argsort(-areas(matched.gt_boxes[missed]), kind="stable")][:n]
    for g in missed:
        rec = gt_records[matched.gt_image[g]]
        out.append(ErrorExample("missed", rec.image_id, str(rec.path), names[matched.gt_labels[g]],
                                _box(matched.gt_boxes[g]), None if not np.isfinite(found[g]) else float(found[g]),
                                None))
    return tuple(out)


def analyse_detections(gt_records: Sequence[ImageRecord], detections: Mapping[str, Detections],
                       class_names: Sequence[str], score_threshold: float | None = None,
                       iou_threshold: float = 0.5, use_07_metric: bool = True) -> Analysis:
    """Error kinds, confusion matrix, F1 curves, AP by size and worst examples.

    Args:
        gt_records, detections, class_names: as for ``evaluate_voc``.
        score_threshold: the operating point; None takes the best pooled F1.
        iou_threshold: the match threshold (VOC's 0.5).
        use_07_metric: the AP of the size split and of the "if fixed" gains.
    """
    class_names = tuple(class_names)
    matched = match_records(gt_records, detections, class_names, iou_threshold)
    curves = f1_curves(matched)
    if score_threshold is not None:
        threshold, rule = float(score_threshold), "given"
    elif not math.isnan(curves[ALL_CLASSES].best_threshold):
        threshold, rule = curves[ALL_CLASSES].best_threshold, "best F1 over all classes"
    else:
        threshold, rule = 0.0, "no detection finds an object: 0"
    return Analysis(
        class_names=class_names, score_threshold=threshold, threshold_rule=rule,
        iou_threshold=float(iou_threshold),
        errors=analyse_errors(matched, threshold, use_07_metric),
        confusion=confusion_matrix(gt_records, detections, class_names, threshold, iou_threshold),
        f1=curves,
        size_ap=ap_by_size(matched, use_07_metric),
        examples=worst_examples(matched, gt_records, threshold))
