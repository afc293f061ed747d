"""Choose the proposal setting that fits a dataset: ``proposals.auto`` and ``sppnet propose --tune``.

Selective search's defaults were set on VOC-like photos. On small grey
images, texture-like objects or tiny cells they can miss most objects
(:mod:`proposals.fit`). The tuner tries a short list of settings on a sample
of the training split, measures each one's recall at IoU 0.5 against the
split's own boxes, its windows per image and its seconds per image, and keeps
the **cheapest setting whose recall reaches the target** within
``max_windows`` (the best recall if none does). It is the same idea as
YOLOv5's AutoAnchor, which re-fits its anchors when their best possible recall
on the training labels is under 0.98.

The candidates, derived from the configured setting (each a plain
:class:`ProposalConfig`, so the choice is recorded in the model's config and
test and detect search the same way):

1. ``configured``: the setting as given;
2. ``k_scaled``: base_k and inc_k scaled with the searched image area against
   a 500-pixel side (the k is a segment size in pixels: k = 100 at 500 px is
   k = 16 at 200 px), and upscaled images get a proportionally larger k;
3. ``small_min_size``: min_size lowered to a third, or to the shorter side of
   the sample's smallest objects (5% quantile) if lower, at least 4 px, when
   the sample has objects under 1.5 x min_size (``proposals.fit.lower_min_size``);
4. ``quality``: OpenCV's quality mode (more colour spaces and k values);
5. ``union``: the search's windows plus the ranked dense grid
   (:mod:`proposals.dense`), with the lower min_size when 3 applies;
6. ``dense``: the ranked dense grid alone, with the same min_size.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from detector.records import ImageRecord

from .config import ProposalConfig
from .fit import SMALL_FACTOR, lower_min_size, measure_fit, small_side
from .search import propose_with_config

# k values of OpenCV's selective search are segment sizes in pixels, set for
# VOC-sized images (the default max_side): a smaller image wants a smaller k.
REFERENCE_SIDE = 500
# The smallest k the tuner tries: below it Felzenszwalb's segmentation breaks
# images into single-pixel segments and the search slows sharply.
MIN_K = 10


@dataclass(frozen=True)
class TuneRow:
    name: str
    overrides: dict  # what differs from the configured setting
    recall_50: float
    recall_70: float
    windows_per_image: float
    seconds_per_image: float


@dataclass(frozen=True)
class TuneResult:
    chosen: ProposalConfig
    chosen_name: str
    target: float
    reached: bool
    sample_images: int
    rows: list[TuneRow]

    def as_dict(self) -> dict:
        return {"chosen": self.chosen_name, "target_recall": self.target, "reached": self.reached,
                "sample_images": self.sample_images, "overrides": self.overrides(),
                "tried": [dataclasses.asdict(r) for r in self.rows]}

    def overrides(self) -> dict:
        return next(r.overrides for r in self.rows if r.name == self.chosen_name)

    def describe(self) -> str:
        """One line: the choice as command-line overrides, and whether it reached the target."""
        chosen = " ".join(f"proposals.{k}={v}" for k, v in self.overrides().items()) or "(no change)"
        outcome = "reached" if self.reached else "not reached; the best recall kept"
        return f"{self.chosen_name}: {chosen} (recall@0.5 target {self.target:g} {outcome})"


def candidate_settings(base: ProposalConfig, records: Sequence[ImageRecord]) -> list[tuple[str, ProposalConfig]]:
    """The settings tried (module docstring), named, in the order listed there."""
    out = [("configured", base)]
    if base.method in ("precomputed",):
        return out
    longer = float(np.median([max(r.width, r.height) for r in records])) if records else REFERENCE_SIDE
    searched = longer * base.upscale if base.max_side <= 0 else min(longer * base.upscale, base.max_side)
    factor = (searched / REFERENCE_SIDE) ** 2
    base_k, inc_k = max(MIN_K, round(base.base_k * factor)), max(MIN_K, round(base.inc_k * factor))
    if (base_k, inc_k) != (base.base_k, base.inc_k) and base.method != "dense":
        out.append(("k_scaled", dataclasses.replace(base, base_k=base_k, inc_k=inc_k)))
    sides = np.concatenate([np.minimum(r.boxes[:, 2] - r.boxes[:, 0], r.boxes[:, 3] - r.boxes[:, 1])
                            for r in records]) if records else np.zeros(0)
    min_size = lower_min_size(int((sides < SMALL_FACTOR * base.min_size).sum()), len(sides), base.min_size,
                              small_side(sides))
    if min_size != base.min_size:
        out.append(("small_min_size", dataclasses.replace(base, min_size=min_size)))
    if base.method in ("opencv_fast", "opencv_single"):
        out.append(("quality", dataclasses.replace(base, method="opencv_quality")))
    if base.method not in ("union", "dense"):
        out.append(("union", dataclasses.replace(base, method="union", min_size=min_size)))
    if base.method != "dense":
        out.append(("dense", dataclasses.replace(base, method="dense", min_size=min_size)))
    return out


def _differences(base: ProposalConfig, cfg: ProposalConfig) -> dict:
    a, b = dataclasses.asdict(base), dataclasses.asdict(cfg)
    return {k: v for k, v in b.items() if a[k] != v}


def tune_proposals(records: Sequence[ImageRecord], read: Callable[[ImageRecord], np.ndarray],
                   class_names: Sequence[str], base: ProposalConfig, *, target: float,
                   log: Callable[[str], None] = lambda _: None) -> TuneResult:
    """Try :func:`candidate_settings` on ``records`` (a sample); pick the cheapest reaching ``target``.

    Args:
        records: the sample (images with their boxes).
        read: decodes a record's image (RGB uint8 [H, W, 3]).
        base: the configured setting (its ``auto`` flag is cleared in the choice).
        target: recall at IoU 0.5 to reach.
        log: called with one line per setting tried.
    """
    base = dataclasses.replace(base, auto=False)
    images = {r.image_id: read(r) for r in records}
    rows, configs = [], {}
    for name, cfg in candidate_settings(base, records):
        start = time.perf_counter()
        windows = {i: propose_with_config(im, cfg, image_id=i) for i, im in images.items()}
        seconds = (time.perf_counter() - start) / max(len(images), 1)
        fit = measure_fit(records, windows.__getitem__, class_names, "sample", cfg.min_size)
        row = TuneRow(name, _differences(base, cfg), fit.recall_50, fit.recall_70, fit.windows_per_image,
                      seconds)
        rows.append(row)
        configs[name] = cfg
        log(f"proposals.auto: {name:<15} recall@0.5 {row.recall_50:.3f}  @0.7 {row.recall_70:.3f}  "
            f"{row.windows_per_image:6.0f} windows/img  {row.seconds_per_image:.2f} s/img  {row.overrides}")
    reaching = [r for r in rows if r.recall_50 >= target - 1e-9]
    if rows[0] in reaching:
        best = rows[0]  # the configured setting fits: keep it
    elif reaching:
        best = min(reaching, key=lambda r: r.seconds_per_image)
    else:
        # the best recall; on a tie the configured setting, then the cheaper one
        best = max(rows, key=lambda r: (r.recall_50, r is rows[0], -r.seconds_per_image))
    return TuneResult(configs[best.name], best.name, target, bool(reaching), len(records), rows)


def sample_records(records: Sequence[ImageRecord], n: int, seed: int) -> list[ImageRecord]:
    """``n`` records with objects, drawn with ``seed`` (all of them when there are fewer)."""
    annotated = [r for r in records if len(r.boxes)]
    if len(annotated) <= n:
        return annotated
    pick = np.random.default_rng(seed).choice(len(annotated), n, replace=False)
    return [annotated[i] for i in sorted(pick)]


def tune_cached(records: Sequence[ImageRecord], digests: dict[str, str], class_names: Sequence[str],
                base: ProposalConfig, cache_dir, seed: int,
                log: Callable[[str], None] = lambda _: None) -> TuneResult:
    """:func:`tune_proposals` on ``base.auto_sample`` records drawn with ``seed``, cached.

    The result is kept in ``cache_dir/<digest>.json``, keyed by the sample's
    image contents (``digests``: image_id -> file digest) and boxes, every
    parameter of ``base`` and the OpenCV version, so a resumed run does not
    search the sample again and a changed image or parameter does.
    """
    import cv2

    from detector.fileio import params_digest, write_json_atomic
    from detector.images import read_image

    sample = sample_records(records, base.auto_sample, seed)
    key = params_digest({"images": {r.image_id: [digests[r.image_id], r.boxes.tolist(), r.labels.tolist()]
                                    for r in sample},
                         "classes": list(class_names), "base": dataclasses.asdict(base),
                         "opencv": cv2.__version__})
    path = Path(cache_dir) / f"{key}.json"
    base = dataclasses.replace(base, auto=False)
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
            rows = [TuneRow(**r) for r in saved["tried"]]
            chosen = dataclasses.replace(base, **saved["overrides"])
            log(f"proposals.auto: reused {path.name}: {saved['chosen']} {saved['overrides']}")
            return TuneResult(chosen, saved["chosen"], saved["target_recall"], saved["reached"],
                              saved["sample_images"], rows)
        except (OSError, ValueError, KeyError, TypeError):
            pass  # unreadable: tune again and rewrite it
    result = tune_proposals(sample, lambda r: read_image(r.path), class_names, base, target=base.auto_target,
                            log=log)
    write_json_atomic(path, result.as_dict())
    return result
