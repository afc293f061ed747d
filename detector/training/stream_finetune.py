"""fc fine-tuning on image-centric mini-batches pooled as training goes (finetune.sampler=stream).

Each step's windows come from :class:`detector.training.window_sampler.ImageCentricSampler`
and are pooled from the conv5 cache by ``pool``, ``finetune.prefetch``
mini-batches ahead in a background thread (:func:`detector.training.prefetch.prefetched`):
cache reads and pooling overlap the SGD step, and at most batch x (prefetch
+ 2) pooled rows exist at a time (the queue, the one being pooled, the one
training), whatever the number of images.
"""
from __future__ import annotations

import itertools
from contextlib import closing
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from ..config import FinetuneConfig
from .fc_finetune import feature_std, train_head
from ..heads import FCHead
from .prefetch import prefetched
from .window_sampler import ImageCentricSampler

# (image index, window indices into that image's windows) -> pool5 [n, D]
PoolFunction = Callable[[int, np.ndarray], torch.Tensor]


def streamed_batches(sampler: ImageCentricSampler, pool: PoolFunction,
                     steps: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` mini-batches (pool5 [B, D], labels [B]), each pooled when asked for."""
    for _ in range(steps):
        draw = sampler.draw()
        x = torch.cat([pool(int(i), w) for i, w in zip(draw.images, draw.windows)])
        yield x, torch.from_numpy(draw.labels)


def finetune_streamed(head: FCHead, sampler: ImageCentricSampler, pool: PoolFunction, cfg: FinetuneConfig,
                      seed: int = 0, log_path: Path | None = None, progress: bool = True,
                      device: torch.device | str = "cpu", validation=None) -> dict:
    """SGD on ``cfg.iterations`` streamed mini-batches; the input scale from the first one
    (as the bank takes it from its first rows). ``validation``: a
    ``detector.training.validation.BestSnapshot`` over the head, as the bank's (:func:`train_head`).

    Returns statistics: iterations, final loss and accuracy, seconds, and the
    windows used (:class:`detector.training.window_sampler.WindowUse`).
    """
    steps = max(1, cfg.iterations)  # the first batch sets the input scale
    with closing(prefetched(streamed_batches(sampler, pool, steps), cfg.prefetch)) as batches:
        first = next(batches)
        head.input_scale.fill_(1.0 / feature_std(first[0]))
        stats = train_head(head, itertools.chain([first], batches), cfg, seed, log_path, progress, device,
                           validation)
    return dict(stats, images_per_batch=sampler.images_per_batch, **sampler.use().as_dict())
