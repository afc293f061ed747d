"""The fine-tuning learning rate: 10x steps as before, cosine decay, linear warm-up."""
import json
import math

import pytest
import torch

from detector.config import FinetuneConfig
from detector.heads import FCHead
from detector.training.fc_finetune import finetune_head
from detector.training.lr_schedule import WARMUP_START, lr_factor, lr_scheduler
from detector.training.sgd import fine_tuning_optimizer


def rates(cfg: FinetuneConfig) -> list[list[float]]:
    """Every group's learning rate at each iteration, stepped as fine-tuning steps it."""
    opt = fine_tuning_optimizer(FCHead(6, 4, 2), cfg)
    sched = lr_scheduler(opt, cfg)
    out = []
    for _ in range(cfg.iterations):
        out.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    return out


def test_the_plain_step_schedule_is_torchs_multistep_as_before():
    cfg = FinetuneConfig(iterations=50, lr=0.01, lr_steps=[20, 40])
    opt = fine_tuning_optimizer(FCHead(6, 4, 2), cfg)
    assert isinstance(lr_scheduler(opt, cfg), torch.optim.lr_scheduler.MultiStepLR)
    lrs = rates(cfg)
    assert [r[0] for r in lrs[18:22]] == pytest.approx([0.01, 0.01, 0.001, 0.001])
    assert lrs[45][0] == pytest.approx(1e-4)
    assert [lr_factor(cfg, i) for i in (0, 19, 20, 40)] == pytest.approx([1, 1, 0.1, 0.01])


def test_cosine_falls_from_lr_to_zero_and_biases_keep_twice_the_rate():
    cfg = FinetuneConfig(iterations=100, lr=0.01, lr_schedule="cosine")
    lrs = rates(cfg)
    weights = [r[0] for r in lrs]
    assert weights[0] == pytest.approx(0.01) and weights[50] == pytest.approx(0.005)
    assert weights[99] == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * 99 / 100)))
    assert all(a > b for a, b in zip(weights, weights[1:]))  # strictly decreasing
    assert all(r[1] == pytest.approx(2 * r[0]) for r in lrs)  # Caffe's 2x for biases
    assert lr_factor(cfg, 100) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("schedule", ["step", "cosine"])
def test_warm_up_rises_linearly_then_hands_over_to_the_schedule(schedule):
    cfg = FinetuneConfig(iterations=200, lr=0.01, lr_schedule=schedule, warmup_iterations=20)
    weights = [r[0] for r in rates(cfg)]
    plain = FinetuneConfig(iterations=200, lr=0.01, lr_schedule=schedule)
    assert weights[0] == pytest.approx(0.01 * WARMUP_START)
    alpha = 10 / 20
    assert weights[10] == pytest.approx(0.01 * lr_factor(plain, 10) * (WARMUP_START * (1 - alpha) + alpha))
    assert all(a < b for a, b in zip(weights[:20], weights[1:21]))  # rising through the warm-up
    assert weights[20:] == pytest.approx([0.01 * lr_factor(plain, i) for i in range(20, 200)])


def test_fine_tuning_follows_the_schedule_in_its_log(tmp_path):
    cfg = FinetuneConfig(hidden=8, iterations=41, lr=0.001, batch_size=8, lr_schedule="cosine", warmup_iterations=10)
    gen = torch.Generator().manual_seed(0)
    fg, bg = torch.randn(16, 12, generator=gen), torch.randn(32, 12, generator=gen)
    finetune_head(FCHead(12, 8, 2), fg, torch.ones(16, dtype=torch.int64), bg, cfg, seed=0,
                  log_path=tmp_path / "loss.jsonl", progress=False)
    logged = {r["iter"]: r["lr"] for r in map(json.loads, (tmp_path / "loss.jsonl").read_text().splitlines())}
    # the log shows the rate after the iteration's step: that of the next iteration
    assert logged[0] == pytest.approx(1e-3 * lr_factor(cfg, 1))
    assert logged[20] == pytest.approx(1e-3 * lr_factor(cfg, 21))
    assert logged[40] == pytest.approx(0.0, abs=1e-12)
