"""detector/training/frozen_prefix.py: conv fine-tuning's cached frozen prefix computes what the whole
trunk computes (exactly: it is stored float32), through the one pooling path."""
import numpy as np
import pytest
import torch

import detector.training.frozen_prefix as fp
from detector.build import build_config_backbone, build_window_features
from detector.config import load_detector_config
from detector.data.mirror import flipped_record
from detector.features.conv_maps import network_input
from detector.records import ImageRecord
from detector.features.pool5 import ImageSource
from helpers import write_noise_image

WINDOWS = np.array([[0, 0, 40, 40], [30, 20, 110, 75], [5, 5, 60, 70]], np.float32)


@pytest.fixture
def record(tmp_path):
    return ImageRecord("img/a", write_noise_image(tmp_path / "a.png"), 128, 96)


@pytest.mark.parametrize("name, blocks", [("tiny", 1), ("tiny", 3), ("mobilenet_v2", 2)])
def test_suffix_of_prefix_is_the_trunk(name, blocks, record):
    trunk = build_config_backbone(load_detector_config(None, [f"backbone.name={name}"]))
    prefix, suffix = trunk.split(blocks)
    x, _ = network_input(trunk, ImageSource.from_record(record).pixels(), 96, 2000)
    with torch.no_grad():
        assert torch.equal(suffix(prefix(x)), trunk(x))
    assert list(suffix.parameters())[-1] is list(trunk.parameters())[-1]  # shared, not copied
    assert sum(1 for m in suffix if any(True for _ in m.parameters())) == blocks
    with pytest.raises(ValueError, match="can fine-tune 1 to"):
        trunk.split(99)


def test_cached_prefix_route_pools_what_the_full_trunk_pools(record, tmp_path, monkeypatch):
    """pool5 through the stored prefix maps equals trainable_pool5 of the whole trunk at each scale,
    values and gradients; the second pass reads the cache; a mirror is an entry of its own."""
    cfg = load_detector_config(None, ["backbone.name=tiny", "features.scales=[96,192]"])
    trunk = build_config_backbone(cfg)  # its own: the test unfreezes blocks
    full = build_window_features(cfg, trunk)
    cached = full.with_frozen_prefix(2, tmp_path / "cache")
    images = [ImageSource.from_record(record), ImageSource.from_record(flipped_record(record), flip=True)]
    cached.prefix.prepare(images, progress=False)
    assert len(list(cached.prefix.cache.dir.glob("*.npz"))) == 2
    runs = []
    real = fp.compute_feature_maps
    monkeypatch.setattr(fp, "compute_feature_maps", lambda *a, **k: runs.append(a) or real(*a, **k))
    learning = trunk.unfreeze_last(2)
    try:
        for image in images:
            for scale in cfg.features.scales:
                grads = []
                for features in (full, cached):
                    pooled = features.trainable_pool5(image, WINDOWS, scale)
                    for p in learning:
                        p.grad = None
                    pooled.sum().backward()
                    grads.append([p.grad.clone() for p in learning])
                    if features is full:
                        want = pooled.detach()
                assert torch.equal(pooled.detach(), want)
                assert all(torch.equal(a, b) for a, b in zip(*grads))
        assert not torch.equal(cached.trainable_pool5(images[0], WINDOWS, 96),
                               cached.trainable_pool5(images[1], WINDOWS, 96))  # the mirror's own maps
    finally:
        trunk.freeze()
    assert runs == []  # every prefix map came from the cache


def test_a_fine_tuned_trunks_conv5_cache_from_the_prefix_is_a_full_passes(record, tmp_path, monkeypatch):
    """The conv5 cache of a fine-tuned trunk filled from the frozen prefix's cached maps (only the
    learning blocks run) holds what a full pass stores, at every scale, mirror included."""
    cfg = load_detector_config(None, ["backbone.name=tiny", "features.scales=[96,192]"])
    trunk = build_config_backbone(cfg)
    images = [ImageSource.from_record(record), ImageSource.from_record(flipped_record(record), flip=True)]
    build_window_features(cfg, trunk).with_frozen_prefix(2, tmp_path / "c").prefix.prepare(images, progress=False)
    _, suffix = trunk.split(2)
    with torch.no_grad():
        for p in suffix.parameters():
            p.add_(0.01 * torch.randn_like(p))  # what fine-tuning changes
    full = build_window_features(cfg, trunk, tmp_path / "full")
    full.prepare(images, progress=False)
    from_prefix = build_window_features(cfg, trunk, tmp_path / "c")
    runs = []
    real = fp.compute_feature_maps
    monkeypatch.setattr(fp, "compute_feature_maps", lambda *a, **k: runs.append(a) or real(*a, **k))
    from_prefix.prepare_from_prefix(images, 2, tmp_path / "c", progress=False)
    assert runs == []  # every prefix map came from the cache
    for image in images:
        for a, b in zip(full.feature_maps(image), from_prefix.feature_maps(image), strict=True):
            assert torch.equal(a.features, b.features) and a.factor == b.factor
    assert not torch.equal(full.feature_maps(images[0])[0].features, full.feature_maps(images[1])[0].features)


def test_prefix_key_follows_the_prefix_weights_only():
    trunk = build_config_backbone(load_detector_config(None, ["backbone.name=tiny"]))
    before = trunk.prefix_digest(2)
    _, suffix = trunk.split(2)
    with torch.no_grad():
        next(suffix.parameters()).add_(1.0)  # what fine-tuning changes
    assert trunk.prefix_digest(2) == before and trunk.prefix_digest(1) != before
    prefix, _ = trunk.split(2)
    with torch.no_grad():
        next(prefix.parameters()).add_(1.0)
    assert trunk.prefix_digest(2) != before


@pytest.mark.parametrize("sampler", ["stream", "bank"])
def test_training_with_the_prefix_cache_is_training_without(sampler, tmp_path):
    """The same fine-tuned head and trunk either way, under the same stage key, with either
    sampler's labels."""
    from detector.data import make_synthetic_voc
    from detector.model import load_model
    from detector.training.train import train
    data = make_synthetic_voc(tmp_path / "d", num_train=4, num_test=0, seed=5)
    base = [f"data.root={data}", "backbone.name=tiny", "features.scales=[96,128]", "proposals.max_windows=30",
            "proposals.workers=1", "finetune.hidden=16", "finetune.iterations=6", "finetune.conv_layers=2",
            "finetune.batch_size=16", "svm.initial_negatives=10", "bbox.enabled=false",
            f"cache_dir={tmp_path / 'cache'}", f"finetune.sampler={sampler}"]
    runs = {flag: train(load_detector_config(None, base + [f"workdir={tmp_path / flag}",
                                                          f"finetune.prefix_cache={flag}"]), progress=False)
            for flag in ("false", "true")}
    assert "frozen_prefix_cache" in runs["true"].timings and "frozen_prefix_cache" not in runs["false"].timings
    assert len(list((tmp_path / "cache" / "prefix").iterdir())) == 1
    without, with_ = (load_model(runs[f].model_path) for f in ("false", "true"))
    assert with_.backbone.digest() == without.backbone.digest()
    assert all(torch.equal(a, b) for a, b in zip(with_.head.state_dict().values(),
                                                 without.head.state_dict().values()))
    assert runs["true"].stage_paths["finetune"].name == runs["false"].stage_paths["finetune"].name
    assert runs["true"].stats["finetune"]["sampler"] == sampler
