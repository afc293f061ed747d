"""Fine-tuning's optimizer: SGD with momentum, Caffe's parameter groups, weight decay in place.

torch's SGD on the CPU (its per-tensor path) adds the weight decay as
``grad.add(param, alpha=decay)``: a new tensor per parameter and step, for
fc6 (4800 x 1024 on MobileNetV2) a fresh 19 MB buffer every iteration.
:class:`InPlaceDecaySGD` adds the same term into each gradient in place
(``grad.add_(param, alpha=decay)``, the same kernel and operands, so the same
values) and runs torch's step without decay: the parameters follow torch's
SGD bit for bit (tested). Its saving is measured only together with the
pyramid's int64 forward (bench/results/finetune_speed/raccoon_20img_int64_pyramid_ab.json).
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import nn

from ..config import FinetuneConfig


class InPlaceDecaySGD(torch.optim.SGD):
    """``torch.optim.SGD`` (momentum, no dampening or Nesterov) whose groups' ``weight_decay``
    is added into the gradients in place before torch's step (which then sees 0)."""

    def __init__(self, groups: Sequence[dict], lr: float, momentum: float):
        super().__init__(groups, lr=lr, momentum=momentum, weight_decay=0.0)

    def add_param_group(self, param_group: dict) -> None:
        """torch's, with the group's ``weight_decay`` (default none) moved to ``in_place_weight_decay``."""
        group = dict(param_group)
        decay = float(group.pop("weight_decay", 0.0))
        super().add_param_group(dict(group, weight_decay=0.0))
        self.param_groups[-1]["in_place_weight_decay"] = decay

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:  # it would recompute the gradients after the decay went in
            raise ValueError("InPlaceDecaySGD.step takes no closure")
        for group in self.param_groups:
            decay = group.get("in_place_weight_decay", 0.0)
            if decay:
                for p in group["params"]:
                    if p.grad is not None:
                        p.grad.add_(p, alpha=decay)
        return super().step(closure)


def caffe_groups(head: nn.Module, cfg: FinetuneConfig, more_weights: Iterable[torch.Tensor] = ()) -> list[dict]:
    """The head's weights (and ``more_weights``: conv fine-tuning's trunk parameters) with
    ``cfg.weight_decay``; its biases at twice the learning rate without decay (Caffe's convention)."""
    return [{"params": [p for n, p in head.named_parameters() if n.endswith("weight")] + list(more_weights),
             "weight_decay": cfg.weight_decay},
            {"params": [p for n, p in head.named_parameters() if n.endswith("bias")],
             "weight_decay": 0.0, "lr": 2 * cfg.lr}]


def fine_tuning_optimizer(head: nn.Module, cfg: FinetuneConfig,
                          more_weights: Iterable[torch.Tensor] = ()) -> InPlaceDecaySGD:
    """Fine-tuning's SGD over :func:`caffe_groups` at ``cfg.lr`` and ``cfg.momentum``."""
    return InPlaceDecaySGD(caffe_groups(head, cfg, more_weights), lr=cfg.lr, momentum=cfg.momentum)
