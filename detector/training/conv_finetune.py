"""Fine-tuning conv layers through the spatial pyramid (past the paper: Fast R-CNN's point).

SPP-net fine-tunes only the fc layers on cached pool5 vectors. Here the last
``finetune.conv_layers`` blocks of the trunk learn too: each mini-batch
takes a few training images and pools their windows at a random training
scale through ``WindowFeatures.trainable_pool5``: the conv pass, window
mapping and pyramid of test time, run with autograd (``SpatialPyramidPool``
carries the gradient), so fc6/fc7/classifier and those conv blocks learn
together. The window labels are the fc fine-tuning's (IoU >= 0.5 positives,
[0.1, 0.5) background, 25% positives per batch).
"""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..config import FinetuneConfig
from .fc_finetune import WindowLabels, feature_std, moving_average, sgd_step, with_validation
from .lr_schedule import lr_scheduler
from .sgd import fine_tuning_optimizer
from .window_sampler import WindowUse, window_use
from ..heads import FCHead
from ..progress import progress_of
from ..threads import adapting_threads, thread_summary
from ..features.pool5 import ImageSource, SPPFeatures


@dataclass(frozen=True)
class ConvSample:
    """One training image for conv fine-tuning: its pixels' source, its windows and their labels."""

    image: ImageSource
    windows: np.ndarray  # float32 [N, 4], original image pixels
    labels: WindowLabels  # indices into windows; fg labels are class + 1


def _pooled_batch(features: SPPFeatures, samples: Sequence[ConvSample], scale: int, per_image_fg: int,
                  per_image_bg: int, gen: torch.Generator, drawn: Sequence[np.ndarray] | None = None):
    """pool5 [B, D] (with gradient) and labels [B] of windows drawn from ``samples`` at ``scale``;
    ``drawn`` (one bool [N] per sample, over its windows), when given, gets the drawn windows set."""
    feats, labels = [], []
    for j, s in enumerate(samples):
        fi = s.labels.fg_index[torch.randint(len(s.labels.fg_index), (per_image_fg,), generator=gen)] \
            if len(s.labels.fg_index) else np.zeros(0, np.int64)
        bi = s.labels.bg_index[torch.randint(len(s.labels.bg_index), (per_image_bg,), generator=gen)] \
            if len(s.labels.bg_index) else np.zeros(0, np.int64)
        index = np.concatenate([fi, bi])
        if len(index) == 0:
            continue
        if drawn is not None:
            drawn[j][index] = True
        feats.append(features.trainable_pool5(s.image, s.windows[index], scale))
        fg_label = dict(zip(s.labels.fg_index.tolist(), s.labels.fg_labels.tolist()))
        labels.append(torch.tensor([fg_label[i] for i in fi.tolist()] + [0] * len(bi), dtype=torch.int64))
    return torch.cat(feats), torch.cat(labels)


def finetune_with_conv(head: FCHead, features: SPPFeatures, samples: Sequence[ConvSample],
                       cfg: FinetuneConfig, seed: int = 0, log_path: Path | None = None,
                       progress: bool = True, validation=None) -> dict:
    """SGD on the head and the last ``cfg.conv_layers`` conv blocks of ``features``' trunk,
    through its pyramid, at a random scale of ``features.scales`` per mini-batch.

    The backbone is frozen again afterwards (its weights are the fine-tuned ones, or with
    ``validation``, a ``detector.training.validation.BestSnapshot`` over head and trunk, those of
    the lowest held-out loss).
    Returns statistics: iterations, final loss and accuracy (moving averages), seconds, and
    the windows drawn (:class:`detector.training.window_sampler.WindowUse`: every labelled
    window of every sample is eligible at every step; images with no positive or no
    background window are never drawn).
    """
    usable = [s for s in samples if len(s.labels.fg_index) and len(s.labels.bg_index)]
    if not usable:
        raise ValueError("conv fine-tuning needs images with both positive and background windows")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 7])
    images = min(cfg.conv_images_per_batch, len(usable))
    n_fg = max(1, round(cfg.batch_size * cfg.fg_fraction / images))
    n_bg = max(1, cfg.batch_size // images - n_fg)
    with torch.no_grad():  # input scale from a first batch, as the fc fine-tuning sets it
        first, _ = _pooled_batch(features, usable[:images], features.scales[0], n_fg, n_bg, gen)
    head.input_scale.fill_(1.0 / feature_std(first))
    backbone = features.backbone
    conv_params = backbone.unfreeze_last(cfg.conv_layers)
    opt = fine_tuning_optimizer(head, cfg, conv_params)
    sched = lr_scheduler(opt, cfg)
    loss_fn = nn.CrossEntropyLoss()
    head.train()
    start, avg_loss, avg_acc = time.perf_counter(), None, None
    log = open(log_path, "w") if log_path else None
    threads: Counter = Counter()
    drawn = [np.zeros(len(s.windows), dtype=bool) for s in usable]  # ~2 KB per image at VOC's density
    try:
        for it in adapting_threads(progress_of(range(cfg.iterations), desc="fine-tune conv + fc", unit="it",
                                               enabled=progress), threads):
            chosen = rng.choice(len(usable), images, replace=False)
            scale = int(rng.choice(features.scales))  # a random training scale per mini-batch
            x, y = _pooled_batch(features, [usable[i] for i in chosen], scale, n_fg, n_bg, gen,
                                 [drawn[i] for i in chosen])
            loss_value, acc = sgd_step(head, opt, sched, loss_fn, x, y)
            avg_loss, avg_acc = moving_average(avg_loss, loss_value), moving_average(avg_acc, acc)
            if log and (it % 20 == 0 or it == cfg.iterations - 1):
                log.write(json.dumps({"iter": it, "loss": round(avg_loss, 5), "acc": round(avg_acc, 4),
                                      "scale": scale, "lr": sched.get_last_lr()[0]}) + "\n")
            if validation is not None:
                validation.after(it, cfg.iterations, log)
    finally:
        if log:
            log.close()
        backbone.freeze()
    head.eval()
    stats = {"iterations": cfg.iterations, "loss": avg_loss, "accuracy": avg_acc, "conv_layers": cfg.conv_layers,
             "seconds": time.perf_counter() - start,
             "threads": thread_summary(threads), **conv_window_use(samples, usable, drawn).as_dict()}
    return with_validation(stats, validation)


def conv_window_use(samples: Sequence[ConvSample], usable: Sequence[ConvSample],
                    drawn: Sequence[np.ndarray]) -> WindowUse:
    """The labelled windows of ``samples`` that conv fine-tuning drew (``drawn``: one flag array
    over each usable sample's windows, in ``usable``'s order; ``usable`` is a subsequence of
    ``samples``, so the other samples' windows count as eligible and never drawn)."""
    flags = {id(s): d for s, d in zip(usable, drawn, strict=True)}
    labelled = [np.concatenate([s.labels.fg_index, s.labels.bg_index]).astype(np.int64) for s in samples]
    used = [flags[id(s)][lab] if id(s) in flags else np.zeros(len(lab), dtype=bool)
            for s, lab in zip(samples, labelled)]
    return window_use(np.concatenate(used) if used else np.zeros(0, bool), [len(lab) for lab in labelled])
