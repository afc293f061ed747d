import numpy as np
import pytest
import torch

from detector.config import FinetuneConfig
from detector.training.fc_finetune import finetune_head, label_windows
from detector.heads import FCHead


def test_label_windows_thresholds_and_caps():
    cfg = FinetuneConfig()
    iou = np.array([0.95, 0.5, 0.49, 0.1, 0.09, 0.0, 0.7], np.float32)
    cls = np.array([2, 1, 0, 0, 0, 0, 1])
    lab = label_windows(iou, cls, cfg, max_fg=10, max_bg=10, rng=np.random.default_rng(0))
    assert lab.fg_index.tolist() == [0, 1, 6]          # IoU >= 0.5
    assert lab.fg_labels.tolist() == [3, 2, 2]         # class + 1 (0 = background)
    assert lab.bg_index.tolist() == [2, 3]             # IoU in [0.1, 0.5)
    capped = label_windows(iou, cls, cfg, max_fg=2, max_bg=1, rng=np.random.default_rng(0))
    assert len(capped.fg_index) == 2 and set(capped.fg_index) <= {0, 1, 6}
    assert len(capped.bg_index) == 1


def test_finetune_learns_separable_classes():
    gen = torch.Generator().manual_seed(0)
    dim, k = 40, 3
    centres = torch.randn(k + 1, dim, generator=gen) * 3
    labels = torch.randint(1, k + 1, (600,), generator=gen)
    fg = centres[labels] + torch.randn(600, dim, generator=gen)
    bg = centres[0] + torch.randn(900, dim, generator=gen)
    head = FCHead(dim, 64, k, dropout=0.0)
    cfg = FinetuneConfig(iterations=300, lr=0.01)
    stats = finetune_head(head, fg.half(), labels, bg.half(), cfg, seed=0, progress=False)
    assert stats["accuracy"] > 0.95
    with torch.no_grad():
        pred = head(centres[labels[:50]] + torch.randn(50, dim, generator=gen)).argmax(1)
    assert (pred == labels[:50]).float().mean() > 0.9
    assert head.features(fg[:5], "fc7").shape == (5, 64)
    assert torch.equal(head.features(fg[:5], "pool5"), fg[:5])


def test_resample_draws_new_banks_every_n_iterations():
    gen = torch.Generator().manual_seed(1)
    dim, k = 16, 2
    centres = torch.randn(k + 1, dim, generator=gen) * 3

    def bank(draw):
        labels = torch.randint(1, k + 1, (200,), generator=gen)
        return (centres[labels] + torch.randn(200, dim, generator=gen)).half(), labels, \
            (centres[0] + torch.randn(300, dim, generator=gen)).half()

    draws = []

    def redraw(n):
        draws.append(n)
        return bank(n)

    cfg = FinetuneConfig(iterations=250, lr=0.01, resample_every=100)
    stats = finetune_head(FCHead(dim, 32, k, dropout=0.0), *bank(0), cfg, progress=False, resample=redraw)
    assert draws == [1, 2] and stats["redraws"] == 2 and stats["accuracy"] > 0.9
    no_redraw = finetune_head(FCHead(dim, 32, k, dropout=0.0), *bank(0),
                              FinetuneConfig(iterations=50, lr=0.01), progress=False, resample=redraw)
    assert no_redraw["redraws"] == 0 and draws == [1, 2]  # resample_every=0: one bank


def test_lr_steps_drop_the_rate_at_the_given_iterations(tmp_path):
    # The official solver's shape, scaled down: 10x down at iterations 20 and 40 of 41.
    import json
    cfg = FinetuneConfig(hidden=8, iterations=41, lr=0.001, lr_steps=[20, 40], batch_size=8)
    rng = torch.Generator().manual_seed(0)
    fg, bg = torch.randn(16, 12, generator=rng), torch.randn(32, 12, generator=rng)
    finetune_head(FCHead(12, 8, 2), fg, torch.ones(16, dtype=torch.int64), bg, cfg, seed=0,
                  log_path=tmp_path / "loss.jsonl", progress=False)
    lrs = {r["iter"]: r["lr"] for r in map(json.loads, (tmp_path / "loss.jsonl").read_text().splitlines())}
    assert lrs[0] == pytest.approx(1e-3) and lrs[20] == pytest.approx(1e-4) and lrs[40] == pytest.approx(1e-5)
