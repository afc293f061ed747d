"""detector/features/pool5.py: the window-feature seam (ImageSource, SPPFeatures, R-CNN's
CropFeatures through the same interface), pool_windows and match_windows."""
import numpy as np
import pytest
import torch

import detector.features.pool5 as wf
from detector.build import build_config_backbone, build_window_features
from detector.config import load_detector_config
from detector.features.conv_maps import compute_feature_maps
from detector.features.pyramid import SpatialPyramidPool, map_windows_to_features, select_scales
from detector.records import ImageRecord
from detector.features.pool5 import ImageSource, SPPFeatures, match_windows, pool_windows
from helpers import write_noise_image

WINDOWS = np.array([[0, 0, 40, 40], [30, 20, 110, 75], [5, 5, 60, 70]], np.float32)


@pytest.fixture(scope="module")
def backbone():
    return build_config_backbone(load_detector_config(None, ["backbone.name=tiny"]))


@pytest.fixture
def record(tmp_path):
    return ImageRecord("img/a", write_noise_image(tmp_path / "a.png"), 128, 96)


def count_reads(monkeypatch):
    calls = []
    real = wf.read_image
    monkeypatch.setattr(wf, "read_image", lambda p: calls.append(p) or real(p))
    return calls


def test_image_source_decodes_once(record, monkeypatch):
    calls = count_reads(monkeypatch)
    image = ImageSource.from_record(record)
    assert image.cacheable and image.key == "img/a"
    assert image.pixels().shape == (96, 128, 3)
    image.pixels()
    assert len(calls) == 1
    in_memory = ImageSource.from_pixels(np.zeros((8, 8, 3), np.uint8), "x")
    assert not in_memory.cacheable and in_memory.pixels().shape == (8, 8, 3)


def test_spp_features_match_the_pipeline_by_hand(backbone, record):
    cfg = load_detector_config(None, ["backbone.name=tiny", "features.scales=[96,192]"])
    features = build_window_features(cfg, backbone)
    assert isinstance(features, SPPFeatures)
    timings = {}
    got = features.pool5(ImageSource.from_record(record), WINDOWS, timings)
    maps = compute_feature_maps(backbone, ImageSource.from_record(record).pixels(), [96, 192], cfg.features.max_size)
    want = pool_windows(maps, WINDOWS, SpatialPyramidPool(cfg.pool.levels), backbone.grid)
    torch.testing.assert_close(got, want)
    assert got.shape == (3, features.output_dim) and set(timings) == {"conv", "pool"}


def test_spp_cache_is_filled_once_and_reused(backbone, record, tmp_path, monkeypatch):
    cfg = load_detector_config(None, ["backbone.name=tiny", "features.scales=[96]"])
    features = build_window_features(cfg, backbone, tmp_path / "cache")
    features.prepare([ImageSource.from_record(record)], progress=False)
    assert features.cache_bytes() > 0
    calls = count_reads(monkeypatch)
    first = features.pool5(ImageSource.from_record(record), WINDOWS)
    features.prepare([ImageSource.from_record(record)], progress=False)  # current: nothing to do
    again = features.pool5(ImageSource.from_record(record), WINDOWS)
    assert calls == []  # every map came from the cache
    torch.testing.assert_close(first, again)
    # Other weights: another cache folder (the key holds the backbone's digest).
    other = build_config_backbone(load_detector_config(None, ["backbone.name=tiny", "seed=1"]))
    assert build_window_features(cfg, other, tmp_path / "cache").cache.dir != features.cache.dir


def test_crop_features_answer_the_same_question(backbone, record):
    cfg = load_detector_config(None, ["backbone.name=tiny", "mode=rcnn", "rcnn.crop_size=64"])
    features = build_window_features(cfg, backbone)
    timings = {}
    out = features.pool5(ImageSource.from_record(record), WINDOWS, timings)
    assert out.shape == (3, features.output_dim) and set(timings) == {"conv"}
    assert features.pool5(ImageSource.from_record(record), np.zeros((0, 4), np.float32)).shape == (
        0, features.output_dim)


def test_pool_windows_uses_each_windows_scale(backbone):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    maps = compute_feature_maps(backbone, image, [96, 288], 2000)
    windows = torch.tensor([[0, 0, 20, 20], [0, 0, 128, 96], [30, 20, 90, 80]], dtype=torch.float32)
    pool = SpatialPyramidPool([6, 3, 2, 1])
    out = pool_windows(maps, windows, pool, backbone.grid)
    chosen = select_scales(windows, [m.factor for m in maps], 224)
    for i, s in enumerate(chosen.tolist()):
        f = maps[s].features
        cells = map_windows_to_features(windows[i:i + 1] * maps[s].factor, backbone.grid, f.shape[1], f.shape[2])
        torch.testing.assert_close(out[i:i + 1], pool(f, cells))
    assert pool_windows(maps, torch.zeros(0, 4), pool, backbone.grid).shape == (0, out.shape[1])


def test_match_windows():
    iou, arg = match_windows(np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32),
                             np.array([[0, 0, 10, 20], [20, 20, 30, 30]], np.float32))
    np.testing.assert_allclose(iou, [0.5, 1.0])
    assert arg.tolist() == [0, 1]
    iou, _ = match_windows(np.zeros((3, 4), np.float32), np.zeros((0, 4), np.float32))
    assert iou.tolist() == [0, 0, 0]


def test_random_scales_for_fine_tuning(backbone, record):
    cfg = load_detector_config(None, ["backbone.name=tiny", "features.scales=[96,192]"])
    features = build_window_features(cfg, backbone)
    image = ImageSource.from_record(record)
    windows = np.tile(WINDOWS, (20, 1))
    selected = features.pool5(image, windows)
    rng = np.random.default_rng(0)
    random = features.pool5(image, windows, scale_rng=np.random.default_rng(0))
    maps = features.feature_maps(image)
    chosen = torch.from_numpy(rng.integers(0, 2, len(windows)))
    want = pool_windows(maps, windows, features.pool, backbone.grid, chosen=chosen)
    torch.testing.assert_close(random, want)
    assert not torch.equal(random, selected)  # some windows moved to the other scale


def test_trainable_pool5_is_test_time_pool5_with_a_gradient(record):
    """Conv fine-tuning's pool5 (with autograd, one scale) equals the frozen pool5 of test time
    for the same trunk, image and windows, at each scale, and its gradient reaches the trunk."""
    cfg = load_detector_config(None, ["backbone.name=tiny", "features.scales=[96,192]"])
    trunk = build_config_backbone(cfg)  # its own: the test unfreezes a block
    features = build_window_features(cfg, trunk)
    image = ImageSource.from_record(record)
    windows = np.tile(WINDOWS, (2, 1))
    maps = features.feature_maps(image)
    learning = trunk.unfreeze_last(1)
    try:
        for k, scale in enumerate(cfg.features.scales):
            trained = features.trainable_pool5(image, windows, scale)
            tested = pool_windows(maps, windows, features.pool, trunk.grid,
                                  chosen=torch.full((len(windows),), k))
            assert trained.requires_grad and not tested.requires_grad
            assert torch.equal(trained.detach(), tested)
            trained.sum().backward()
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in learning)
    finally:
        trunk.freeze()


def test_only_spp_features_pool_with_a_gradient(backbone, record):
    from detector.features.rcnn_crops import CropFeatures
    crops = CropFeatures(backbone, SpatialPyramidPool([1]), 64, 4)
    with pytest.raises(TypeError, match="no differentiable pool5"):
        crops.trainable_pool5(ImageSource.from_record(record), WINDOWS, 96)
