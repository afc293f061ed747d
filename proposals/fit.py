"""Do the windows fit the data? Recall of a split's windows against its own ground truth.

Every stage after the proposals only ever scores windows, so the fraction of
objects that some window covers is a ceiling on what the detector can find.
Selective search finds VOC objects, raccoons and blood cells; on texture-like
defects, cells in clutter or small grey images it can miss most objects, and
nothing downstream says so. Training therefore measures this fit on its own
split (the ground truth is at hand) and warns below ``proposals.min_recall``,
the way YOLOv5's AutoAnchor checks its anchors' best possible recall on the
training labels before training.

Definitions as in :mod:`proposals.recall` (best IoU of each ground-truth box
with any window of its image; VOC ``difficult`` boxes left out).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

from detector.records import ImageRecord

from .config import ProposalConfig
from .recall import best_overlaps

# The two IoUs reported: 0.5 is what VOC mAP counts; 0.7 is what box
# regression can still repair (it trains on windows above 0.6).
FIT_IOUS = (0.5, 0.7)
# Objects whose shorter side is under this multiple of proposals.min_size are
# "small for the search": the warning suggests a lower min_size when many are.
SMALL_FACTOR = 1.5
# A lower min_size is worth trying when more than this share of the objects is small for it.
SMALL_SHARE = 0.2
# The lowest min_size suggested: under 4 px a window holds less than one conv5 cell's detail.
LOWEST_MIN_SIZE = 4.0
# A lowered min_size also goes down to the shorter side of the smallest objects but this
# share (their quantile), so that thin objects (scratches 4 px wide) get windows too.
SMALL_QUANTILE = 0.05


@dataclass(frozen=True)
class ClassFit:
    objects: int
    recall_50: float
    recall_70: float


@dataclass(frozen=True)
class ProposalFit:
    """Recall of one split's windows (fractions in [0, 1])."""

    split: str
    images: int
    objects: int
    windows_per_image: float
    recall_50: float
    recall_70: float
    per_class: dict[str, ClassFit]
    small_objects: int  # shorter side < SMALL_FACTOR x proposals.min_size
    small_side: float = 0.0  # the SMALL_QUANTILE quantile of the objects' shorter sides (px)

    def as_dict(self) -> dict:
        return asdict(self)


def measure_fit(records: Sequence[ImageRecord], windows_of: Callable[[str], np.ndarray],
                class_names: Sequence[str], split: str, min_size: float) -> ProposalFit:
    """Recall at IoU 0.5 and 0.7 of ``windows_of(image_id)`` against ``records``' boxes."""
    best, labels, sides, counts = [], [], [], []
    for rec in records:
        keep = ~rec.difficult.astype(bool)
        boxes = rec.boxes[keep]
        windows = windows_of(rec.image_id)
        counts.append(len(windows))
        best.append(best_overlaps(boxes, windows, [max(len(windows), 1)])[:, 0])
        labels.append(rec.labels[keep])
        sides.append(np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]))
    best_iou = np.concatenate(best) if best else np.zeros(0)
    labels = np.concatenate(labels).astype(np.int64) if labels else np.zeros(0, np.int64)
    shorter = np.concatenate(sides) if sides else np.zeros(0)

    def recall(mask: np.ndarray, iou: float) -> float:
        n = int(mask.sum())
        return float((best_iou[mask] >= iou - 1e-9).sum() / n) if n else 0.0

    everything = np.ones(len(best_iou), bool)
    per_class = {name: ClassFit(int((labels == c).sum()), recall(labels == c, FIT_IOUS[0]),
                                recall(labels == c, FIT_IOUS[1]))
                 for c, name in enumerate(class_names) if (labels == c).any()}
    return ProposalFit(split=split, images=len(records), objects=len(best_iou),
                       windows_per_image=float(np.mean(counts)) if counts else 0.0,
                       recall_50=recall(everything, FIT_IOUS[0]), recall_70=recall(everything, FIT_IOUS[1]),
                       per_class=per_class, small_objects=int((shorter < SMALL_FACTOR * min_size).sum()),
                       small_side=small_side(shorter))


def small_side(shorter: np.ndarray) -> float:
    """The SMALL_QUANTILE quantile of objects' shorter sides (0 without objects)."""
    return float(np.quantile(shorter, SMALL_QUANTILE)) if len(shorter) else 0.0


def format_fit(fit: ProposalFit) -> str:
    """One line overall, then one per class: what the training log and ``sppnet stats`` print."""
    lines = [f"proposal recall on the {fit.split} split: {fit.recall_50:.3f} at IoU 0.5, "
             f"{fit.recall_70:.3f} at 0.7 ({fit.objects} objects, {fit.images} images, "
             f"{fit.windows_per_image:.0f} windows/image)"]
    width = max([len(n) for n in fit.per_class] + [5])
    lines += [f"  {name.ljust(width)}  {c.recall_50:.3f} / {c.recall_70:.3f}  ({c.objects} objects)"
              for name, c in fit.per_class.items()]
    return "\n".join(lines)


def lower_min_size(small: int, objects: int, min_size: float, smallest: float) -> float:
    """When more than SMALL_SHARE of ``objects`` are ``small`` (shorter side under SMALL_FACTOR x
    min_size): min_size at a third, or ``smallest`` (:func:`small_side`) if lower, but at least
    LOWEST_MIN_SIZE; else ``min_size`` unchanged. The one rule behind the fit warning's tip and
    the tuner's ``small_min_size`` candidate."""
    if objects and small > SMALL_SHARE * objects and min_size > LOWEST_MIN_SIZE:
        return max(LOWEST_MIN_SIZE, min(min_size // 3, float(np.floor(smallest))))
    return min_size


def suggest_settings(fit: ProposalFit, cfg: ProposalConfig) -> list[str]:
    """Settings worth trying when the fit is low, most likely first (README "On your data")."""
    tips = []
    min_size = lower_min_size(fit.small_objects, fit.objects, cfg.min_size, fit.small_side)
    if min_size != cfg.min_size:
        tips.append(f"proposals.min_size={min_size:g} ({fit.small_objects} of "
                    f"{fit.objects} objects have a side under {SMALL_FACTOR * cfg.min_size:g} px)")
    if cfg.method not in ("dense", "union"):
        tips.append("proposals.method=union (selective search plus a ranked dense grid; "
                    "method=dense for the grid alone: texture-like or low-contrast objects)")
    if cfg.method in ("opencv_fast", "opencv_single"):
        tips.append("proposals.method=opencv_quality (more colour spaces and k values, ~4x slower)")
    if cfg.max_windows < 2000:
        tips.append(f"proposals.max_windows=2000 (now {cfg.max_windows})")
    return tips


def fit_warning(fit: ProposalFit, cfg: ProposalConfig) -> str | None:
    """The warning for a fit under ``cfg.min_recall`` at IoU 0.5 (None when it is not)."""
    if fit.objects == 0 or fit.recall_50 >= cfg.min_recall:
        return None
    worst, worst_fit = min(fit.per_class.items(), key=lambda kv: kv[1].recall_50)
    message = (f"the proposals reach only {fit.recall_50:.1%} of the {fit.split} split's objects at IoU 0.5 "
               f"(proposals.min_recall {cfg.min_recall:g}; worst class {worst!r}: {worst_fit.recall_50:.1%}); "
               "the detector cannot find the others")
    tips = suggest_settings(fit, cfg)
    return message + (". Try: " + "; ".join(tips) if tips else "")
