"""Fine-tuning fc6, fc7 and the (K+1)-way classifier on pooled conv5 features.

SPP-net fine-tunes only the fully connected layers: the conv layers stay
fixed, so pooled features can be computed once from the conv5 cache. Windows
with IoU >= 0.5 with a ground-truth box are positives (labelled with its
class), windows with IoU in [0.1, 0.5) are background, and every mini-batch
holds 25% positives (R-CNN, SPP-net).
"""
from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from ..config import FinetuneConfig
from ..heads import FCHead
from ..progress import progress_of
from ..threads import adapting_threads, thread_summary
from .lr_schedule import lr_scheduler
from .sgd import fine_tuning_optimizer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowLabels:
    """Fine-tuning labels of an image's windows: indices into its windows, label 0 = background."""

    fg_index: np.ndarray  # int64 [P]
    fg_labels: np.ndarray  # int64 [P], class index + 1
    bg_index: np.ndarray  # int64 [Q]

    def empty(self) -> "WindowLabels":
        """No windows (an image fine-tuning does not learn from)."""
        return WindowLabels(self.fg_index[:0], self.fg_labels[:0], self.bg_index[:0])


def label_windows(max_iou: np.ndarray, gt_label_of_best: np.ndarray, cfg: FinetuneConfig,
                  max_fg: int | None = None, max_bg: int | None = None,
                  rng: np.random.Generator | None = None) -> WindowLabels:
    """Choose fine-tuning windows of one image.

    Args:
        max_iou: [N] each window's best IoU with a ground-truth box.
        gt_label_of_best: [N] class index (0-based) of that box.
        max_fg, max_bg: at most this many positives / background windows are
            kept per image (sampled uniformly with ``rng``), bounding the
            in-memory bank; None keeps them all.
    """
    fg = np.flatnonzero(max_iou >= cfg.fg_iou)
    bg = np.flatnonzero((max_iou >= cfg.bg_iou_low) & (max_iou < cfg.fg_iou))
    if max_fg is not None and len(fg) > max_fg:
        fg = np.sort(rng.choice(fg, max_fg, replace=False))
    if max_bg is not None and len(bg) > max_bg:
        bg = np.sort(rng.choice(bg, max_bg, replace=False))
    return WindowLabels(fg.astype(np.int64), gt_label_of_best[fg].astype(np.int64) + 1, bg.astype(np.int64))


def feature_std(features: torch.Tensor) -> float:
    """Standard deviation of all values (for ``FCHead.input_scale``); 1 if degenerate."""
    std = float(features.float().std()) if features.numel() > 1 else 1.0
    return std if std > 1e-8 else 1.0


def sgd_step(head: FCHead, opt, sched, loss_fn, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """One SGD step of ``head`` on windows x with labels y; returns (loss, accuracy) of the batch."""
    logits = head(x)
    loss = loss_fn(logits, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return loss.item(), float((logits.argmax(1) == y).float().mean())


def moving_average(average: float | None, value: float, keep: float = 0.98) -> float:
    """The running average the progress bar and the loss log show."""
    return value if average is None else keep * average + (1 - keep) * value


def train_head(head: FCHead, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], cfg: FinetuneConfig,
               seed: int = 0, log_path: Path | None = None, progress: bool = True,
               device: torch.device | str = "cpu", validation=None) -> dict:
    """SGD on ``head`` for ``cfg.iterations`` mini-batches (windows [B, D], labels [B]) of ``batches``.

    The head's input scale must be set already. ``validation``: a
    ``detector.training.validation.BestSnapshot`` over the head: the held-out loss every
    that many iterations, and the head of the lowest one kept. Returns
    statistics: iterations, final loss and accuracy (moving averages), seconds
    (and the held-out summary with ``validation``).
    """
    torch.manual_seed(seed)  # dropout masks
    head.to(device)
    opt = fine_tuning_optimizer(head, cfg)  # Caffe convention: biases learn 2x
    sched = lr_scheduler(opt, cfg)
    loss_fn = nn.CrossEntropyLoss()
    head.train()
    start = time.perf_counter()
    avg_loss, avg_acc = None, None
    log = open(log_path, "w") if log_path else None
    bar = progress_of(range(cfg.iterations), desc="fine-tune fc", unit="it", enabled=progress)
    threads: Counter = Counter()
    try:
        for it, (x, y) in zip(adapting_threads(bar, threads), batches):
            loss_value, acc = sgd_step(head, opt, sched, loss_fn, x.to(device).float(), y.to(device))
            avg_loss, avg_acc = moving_average(avg_loss, loss_value), moving_average(avg_acc, acc)
            if it % 20 == 0 or it == cfg.iterations - 1:
                bar.set_postfix(loss=f"{avg_loss:.3f}", acc=f"{avg_acc:.3f}")
                if log:
                    log.write(json.dumps({"iter": it, "loss": round(avg_loss, 5), "acc": round(avg_acc, 4),
                                          "lr": sched.get_last_lr()[0]}) + "\n")
            if validation is not None:
                validation.after(it, cfg.iterations, log)
    finally:
        if log:
            log.close()
    head.cpu().eval()
    stats = {"iterations": cfg.iterations, "loss": avg_loss, "accuracy": avg_acc,
             "seconds": time.perf_counter() - start, "threads": thread_summary(threads)}
    return with_validation(stats, validation)


def with_validation(stats: dict, validation) -> dict:
    """``stats`` with the held-out summary, the best snapshot restored (no-op without validation)."""
    if validation is None:
        return stats
    validation.restore()
    return dict(stats, validation=validation.summary())


def finetune_head(head: FCHead, fg_features: torch.Tensor, fg_labels: torch.Tensor,
                  bg_features: torch.Tensor, cfg: FinetuneConfig, seed: int = 0,
                  log_path: Path | None = None, progress: bool = True,
                  device: torch.device | str = "cpu",
                  resample: Callable[[int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None,
                  validation=None) -> dict:
    """SGD on mini-batches of ``cfg.batch_size`` windows of a pool5 bank, ``cfg.fg_fraction`` of them positive.

    Args:
        fg_features: [P, D] pool5 of positive windows; fg_labels: [P] in 1..K.
        bg_features: [Q, D] pool5 of background windows.
        device: where the SGD runs; the head is back on the CPU afterwards.
        resample: with ``cfg.resample_every`` > 0, called with the draw number
            (1, 2, ...) every that many iterations for a new (fg, fg_labels, bg)
            bank; the input scale stays the first bank's.
        validation: a ``detector.training.validation.BestSnapshot`` over the head (:func:`train_head`).
    Returns:
        statistics: iterations, final loss and accuracy (moving averages),
        seconds, the held-out summary with ``validation``, the bank's size,
        the draws, and ``used_rows``: for each draw the bank rows (fg, bg)
        some mini-batch took.
    """
    if len(fg_features) == 0 or len(bg_features) == 0:
        raise ValueError(f"fine-tuning needs positive and background windows; got {len(fg_features)} "
                         f"positives and {len(bg_features)} background windows (check proposals and IoU thresholds)")
    head.input_scale.fill_(1.0 / feature_std(torch.cat([fg_features[:5000], bg_features[:5000]])))
    n_fg = max(1, round(cfg.batch_size * cfg.fg_fraction))
    n_bg = cfg.batch_size - n_fg
    bank = {"fg": fg_features, "labels": fg_labels, "bg": bg_features, "draws": 0}
    used: list[tuple[torch.Tensor, torch.Tensor]] = []

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(seed)
        for it in range(cfg.iterations):
            if resample is not None and cfg.resample_every > 0 and it > 0 and it % cfg.resample_every == 0:
                bank["draws"] += 1
                bank["fg"], bank["labels"], bank["bg"] = resample(bank["draws"])
            if len(used) <= bank["draws"]:
                used.append((torch.zeros(len(bank["fg"]), dtype=torch.bool),
                             torch.zeros(len(bank["bg"]), dtype=torch.bool)))
            fi = torch.randint(len(bank["fg"]), (n_fg,), generator=gen)
            bi = torch.randint(len(bank["bg"]), (n_bg,), generator=gen)
            used[-1][0][fi], used[-1][1][bi] = True, True
            yield (torch.cat([bank["fg"][fi], bank["bg"][bi]]),
                   torch.cat([bank["labels"][fi], torch.zeros(n_bg, dtype=torch.int64)]))

    stats = train_head(head, batches(), cfg, seed, log_path, progress, device, validation)
    return dict(stats, positives=len(bank["fg"]), background=len(bank["bg"]), redraws=bank["draws"],
                used_rows=[(np.flatnonzero(f.numpy()), np.flatnonzero(b.numpy())) for f, b in used])
