"""A held-out split for fine-tuning (``data.val_split``): its loss every N iterations, best snapshot kept.

The official SPP_net fine-tuning is described (issue 23; not checked against
its code here) as keeping the snapshot with the lowest held-out error. Here fine-tuning (fc-only and conv) pools a fixed sample of windows
from the validation split's images (labelled as the training windows are:
IoU >= fg_iou positives, [bg_iou_low, fg_iou) background), measures the
head's loss and accuracy on them every ``finetune.val_every`` iterations and
at the end, and restores the head (and, with conv fine-tuning, the trunk) of
the evaluation with the lowest loss. Validation images must not be training
images (an error names the shared ones).
"""
from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..build import build_dataset
from ..config import DataConfig, FinetuneConfig
from .conv_finetune import ConvSample
from ..data.verify import verify_images
from .fc_finetune import label_windows
from ..records import ImageRecord
from ..features.pool5 import ImageSource, match_windows

logger = logging.getLogger(__name__)

# Its own random stream (seeded by the config's seed): the held-out sample does not move the training draws.
_VALIDATION_STREAM = 4


class ValidationSplitError(ValueError):
    """The validation split shares images with the training images."""


@dataclass(frozen=True)
class HeldOutImages:
    """The validation split's usable images and their content digests."""

    split: str
    records: list[ImageRecord]
    digests: dict[str, str]

    def key(self) -> dict:
        """What keys a fine-tuning stage that validated on these images."""
        return {"split": self.split, "images": dict(self.digests)}


def load_held_out(data: DataConfig, cache_root: Path, class_names: Sequence[str], train_records: Sequence[ImageRecord],
                  train_digests: dict[str, str], progress: bool = True) -> HeldOutImages | None:
    """The images of ``data.val_split`` (None when it is empty), checked as the training ones are
    (their checks cached under ``cache_root``).

    Raises:
        ValidationSplitError: an image (by id or by file content) is also a training image.
    """
    split = data.val_split
    if not split:
        return None
    records = list(build_dataset(data, split, class_names=class_names))
    if not records:
        raise ValueError(f"{data.root}: data.val_split {split!r} has no images")
    verified = verify_images(records, cache_root / "image_checks.json", strict=data.strict_images,
                             progress=progress, what=f"{data.root} {split} split")
    train_ids, train_files = {r.image_id for r in train_records}, set(train_digests.values())
    shared = [r.image_id for r in verified.records
              if r.image_id in train_ids or verified.digests[r.image_id] in train_files]
    if shared:
        raise ValidationSplitError(
            f"{data.root}: data.val_split {split!r} shares {len(shared)} image(s) with the training split "
            f"{data.train_split!r} (e.g. {', '.join(shared[:3])}); validation needs held-out images")
    return HeldOutImages(split, list(verified.records), dict(verified.digests))


def held_out_samples(held: HeldOutImages, windows_of: Callable[[str], np.ndarray], finetune: FinetuneConfig,
                     seed: int, ground_truth: Callable[[ImageRecord], tuple[np.ndarray, np.ndarray]]
                     ) -> list[ConvSample]:
    """Each validation image's labelled windows (its ``ground_truth(record)`` boxes, the training
    rule's, then ``windows_of(image_id)``), labelled by ``finetune``'s rules, at most the bank's
    per-image caps, sampled once (with ``seed``)."""
    rng = np.random.default_rng([seed, _VALIDATION_STREAM])
    samples = []
    for r in held.records:
        gt_boxes, gt_labels = ground_truth(r)
        windows = np.concatenate([gt_boxes, windows_of(r.image_id)]).astype(np.float32)
        max_iou, arg = match_windows(windows, gt_boxes)
        best_label = gt_labels[arg] if len(gt_boxes) else np.zeros(len(windows), np.int64)
        labels = label_windows(max_iou, best_label, finetune, finetune.bank_fg_per_image,
                               finetune.bank_bg_per_image, rng)
        samples.append(ConvSample(ImageSource.from_record(r, held.digests[r.image_id]), windows, labels))
    return samples


def held_out_windows(samples: Sequence[ConvSample], pool5: Callable[[ImageSource, np.ndarray], Tensor]
                     ) -> tuple[Tensor, Tensor]:
    """pool5 [N, D] (by ``pool5(image, windows)``) and labels [N] of every held-out window."""
    feats, labels = [], []
    for s in samples:
        index = np.concatenate([s.labels.fg_index, s.labels.bg_index])
        if len(index):
            feats.append(pool5(s.image, s.windows[index]).float())
            labels.append(torch.from_numpy(np.concatenate([s.labels.fg_labels,
                                                           np.zeros(len(s.labels.bg_index), np.int64)])))
    if not feats:
        raise ValueError("the validation split has no positive or background window to validate on")
    return torch.cat(feats), torch.cat(labels)


@torch.no_grad()
def held_out_loss(head: nn.Module, x: Tensor, y: Tensor) -> tuple[float, float]:
    """Cross-entropy and accuracy of ``head`` (in eval mode: no dropout) on windows x, labels y."""
    was_training = head.training
    head.eval()
    try:
        logits = head(x.to(next(head.parameters()).device)).cpu()
        return float(nn.functional.cross_entropy(logits, y)), float((logits.argmax(1) == y).float().mean())
    finally:
        head.train(was_training)


class BestSnapshot:
    """The held-out loss every ``every`` iterations and at the last, and the modules' state
    at the lowest one (``restore`` puts it back).

    ``measure()`` returns (loss, accuracy) on the held-out windows as the modules are now.
    """

    def __init__(self, measure: Callable[[], tuple[float, float]], every: int, modules: dict[str, nn.Module],
                 split: str = "", windows: int = 0):
        self.measure = measure
        self.every = every
        self.modules = modules
        self.split, self.windows = split, windows
        self.history: list[dict] = []
        self.best: dict | None = None
        self._state: dict[str, dict] = {}

    def after(self, it: int, iterations: int, log=None) -> None:
        """Measure after iteration ``it`` (0-based) if it is due; keep the state if it is the best."""
        if (it + 1) % self.every and it != iterations - 1:
            return
        loss, acc = self.measure()
        entry = {"iter": it, "val_loss": round(loss, 5), "val_acc": round(acc, 4)}
        self.history.append(entry)
        logger.info("fine-tuning: iteration %d, held-out loss %.4f, accuracy %.3f (%s split, %d windows)",
                    it + 1, loss, acc, self.split, self.windows)
        if log:
            log.write(json.dumps(entry) + "\n")
        if self.best is None or loss < self.best["val_loss"]:
            self.best = entry
            self._state = {name: copy.deepcopy(m.state_dict()) for name, m in self.modules.items()}

    def restore(self) -> None:
        """The modules back at the best evaluation's state."""
        for name, state in self._state.items():
            self.modules[name].load_state_dict(state)

    def summary(self) -> dict:
        best = self.best or {}
        return {"split": self.split, "windows": self.windows, "every": self.every,
                "best_iteration": best.get("iter"), "best_loss": best.get("val_loss"),
                "best_accuracy": best.get("val_acc"), "history": list(self.history)}


def held_out_snapshot(samples: Sequence[ConvSample], pool5: Callable[[ImageSource, np.ndarray], Tensor],
                      modules: dict[str, nn.Module], every: int, split: str, pool_once: bool) -> BestSnapshot:
    """A :class:`BestSnapshot` of ``modules`` (``modules["head"]`` scores) on ``samples``' windows;
    ``pool_once``: their pool5 does not change while training (a frozen trunk), else it is
    pooled again at each evaluation (conv fine-tuning)."""
    head = modules["head"]
    if pool_once:
        x, y = held_out_windows(samples, pool5)

        def measure() -> tuple[float, float]:
            return held_out_loss(head, x, y)
    else:
        def measure() -> tuple[float, float]:
            return held_out_loss(head, *held_out_windows(samples, pool5))
    windows = sum(len(s.labels.fg_index) + len(s.labels.bg_index) for s in samples)
    return BestSnapshot(measure, every, modules, split, windows)
