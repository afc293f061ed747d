"""detector/classification: crops, size buckets, the trunk split, the model file round trip."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from detector.classification.config import ClassifyConfig, ClassifyInputConfig, ClassifyModelConfig
from detector.classification.data import grow_box
from detector.classification.inputs import input_shape, size_batches
from detector.classification.model import build_classifier, load_classifier, save_classifier


def test_grow_box_adds_context_rounds_outwards_and_clips():
    assert grow_box(np.array([10.0, 20.0, 30.0, 60.0]), 0.1, 100, 100) == (8, 16, 32, 64)
    assert grow_box(np.array([1.5, 0.0, 99.5, 50.0]), 0.1, 100, 55) == (0, 0, 100, 55)


def test_own_size_keeps_the_shorter_side_and_snaps_the_longer_to_buckets():
    own = ClassifyInputConfig(mode="own", sizes=[64], bucket_step=16)
    assert input_shape(50, 100, 64, own) == (64, 128)
    assert input_shape(100, 61, 64, own) == (112, 64)  # 104.9 -> 112
    assert input_shape(100, 61, 64, ClassifyInputConfig(mode="fixed")) == (64, 64)


def test_size_batches_hold_one_shape_each_and_cover_every_index():
    shapes = [(3, 4, 4), (3, 4, 6), (3, 4, 4), (3, 4, 6), (3, 4, 4)]
    for gen in (None, torch.Generator().manual_seed(0)):
        batches = size_batches(shapes, 2, gen)
        assert sorted(i for b in batches for i in b) == list(range(5))
        assert all(len(b) <= 2 and len({shapes[i] for i in b}) == 1 for b in batches)
    assert size_batches(shapes, 2) == [[0, 2], [4], [1, 3]]


def test_trainable_blocks_learn_and_the_front_does_not(tmp_path):
    cfg = ClassifyConfig(model=ClassifyModelConfig(levels=[2, 1], trainable_blocks=2, hidden=0))
    model = build_classifier(cfg, 3)
    assert [p.requires_grad for p in model.front.parameters()] == [False] * 6  # tiny: 5 convs, 3 frozen
    assert all(p.requires_grad for p in model.blocks.parameters()) and len(list(model.blocks.parameters())) == 4
    x = torch.randn(2, 3, 64, 80)
    save_classifier(tmp_path / "m.pt", model, cfg, ("a", "b", "c"))
    loaded, loaded_cfg, names = load_classifier(tmp_path / "m.pt")
    assert names == ("a", "b", "c") and loaded_cfg == cfg
    torch.testing.assert_close(loaded(x), model.eval()(x))
    with pytest.raises(ValueError, match="trainable_blocks = 6, but the tiny trunk has only 5"):
        build_classifier(ClassifyConfig(model=ClassifyModelConfig(trainable_blocks=6)), 3)
