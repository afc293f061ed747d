"""Fine-tuning's SGD adds the weight decay in place and follows torch's SGD bit for bit."""
from __future__ import annotations

import copy

import torch
from torch import nn

from detector.config import FinetuneConfig
from detector.training.sgd import InPlaceDecaySGD, caffe_groups, fine_tuning_optimizer


def _train(model: nn.Module, opt, steps: int = 12) -> None:
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[8], gamma=0.1)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = torch.randn(16, 30, generator=gen)
        y = torch.randint(0, 3, (16,), generator=gen)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()


def test_in_place_decay_follows_torch_sgd_exactly():
    torch.manual_seed(0)
    cfg = FinetuneConfig(lr=0.01, momentum=0.9, weight_decay=0.05)  # a large decay: its term shows
    head = nn.Sequential(nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 3))
    extra = nn.Linear(30, 30)  # stands for conv fine-tuning's trunk parameters (all decayed)
    twin, twin_extra, start = copy.deepcopy(head), copy.deepcopy(extra), copy.deepcopy(head)

    def model(h, e):
        return lambda x: h(e(x))

    _train(model(head, extra), fine_tuning_optimizer(head, cfg, extra.parameters()))
    _train(model(twin, twin_extra), torch.optim.SGD(caffe_groups(twin, cfg, twin_extra.parameters()),
                                                    lr=cfg.lr, momentum=cfg.momentum))
    for (name, a), b in zip([*head.named_parameters(), *extra.named_parameters()],
                            [*twin.parameters(), *twin_extra.parameters()]):
        assert torch.equal(a, b), name
    assert not torch.equal(head[0].weight, start[0].weight)  # it trained


def test_groups_keep_caffes_convention_and_torch_sees_no_decay():
    cfg = FinetuneConfig(lr=0.01, momentum=0.9, weight_decay=0.0005)
    head = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    opt = fine_tuning_optimizer(head, cfg)
    weights, biases = opt.param_groups
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 0.0]  # torch's step adds none
    assert (weights["in_place_weight_decay"], biases["in_place_weight_decay"]) == (0.0005, 0.0)
    assert (weights["lr"], biases["lr"]) == (0.01, 0.02)
    assert len(weights["params"]) == 2 and len(biases["params"]) == 2
    assert isinstance(opt, InPlaceDecaySGD)


def test_a_group_added_later_keeps_its_decay_and_a_closure_is_refused():
    import pytest

    cfg = FinetuneConfig(lr=0.01, momentum=0.9, weight_decay=0.0005)
    head, extra = nn.Linear(4, 3), nn.Linear(3, 3)
    opt = fine_tuning_optimizer(head, cfg)
    opt.add_param_group({"params": list(extra.parameters()), "weight_decay": 0.1})
    assert (opt.param_groups[-1]["weight_decay"], opt.param_groups[-1]["in_place_weight_decay"]) == (0.0, 0.1)
    with pytest.raises(ValueError, match="closure"):
        opt.step(lambda: 0.0)
