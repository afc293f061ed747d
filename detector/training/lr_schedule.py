"""The fine-tuning learning rate over iterations: 10x steps (R-CNN, SPP-net) or a cosine decay,
each after an optional linear warm-up (detectron2's ``WarmupParamScheduler``)."""
from __future__ import annotations

import math

import torch

from ..config import FinetuneConfig

# The warm-up's first factor: detectron2's SOLVER.WARMUP_FACTOR default.
WARMUP_START = 0.001


def lr_factor(cfg: FinetuneConfig, it: int) -> float:
    """The learning rate of iteration ``it`` (0-based) as a multiple of ``cfg.lr``."""
    if cfg.lr_schedule == "cosine":  # from 1 down to 0 at cfg.iterations (detectron2's WarmupCosineLR)
        factor = 0.5 * (1.0 + math.cos(math.pi * min(it, cfg.iterations) / cfg.iterations))
    else:
        factor = 0.1 ** sum(it >= m for m in cfg.milestones())
    if it < cfg.warmup_iterations:
        alpha = it / cfg.warmup_iterations
        factor *= WARMUP_START * (1 - alpha) + alpha
    return factor


def lr_scheduler(opt: torch.optim.Optimizer, cfg: FinetuneConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """The scheduler of ``cfg.lr_schedule`` for ``opt`` (stepped once per iteration).

    The plain step schedule stays torch's ``MultiStepLR``, the floats of every model trained
    before warm-up and cosine existed; the others scale each group's initial rate by
    :func:`lr_factor` (biases keep their 2x).
    """
    if cfg.lr_schedule == "step" and not cfg.warmup_iterations:
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=cfg.milestones(), gamma=0.1)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda it: lr_factor(cfg, it))
