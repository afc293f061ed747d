import numpy as np
import pytest
import torch
from PIL import Image

from detector.config import load_detector_config
from detector.features import (FeatureCache, ImageTooSmallError, cached_feature_maps, compute_feature_maps,
                               feature_cache_key, scale_factor)
from detector.images import read_image
from detector.pooling import SpatialPyramidPool, map_windows_to_features, select_scales
from detector.records import ImageRecord
from detector.training import build_seeded_backbone
from detector.window_features import match_windows, pool_windows


@pytest.fixture(scope="module")
def backbone():
    return build_seeded_backbone(load_detector_config(None, ["backbone.name=tiny"]))


def write_image(path, seed=0, size=(128, 96)):
    arr = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return ImageRecord(path.stem, path, size[0], size[1])


def test_scale_factor_shorter_side_and_cap():
    assert scale_factor(375, 500, 688, 2000) == pytest.approx(688 / 375)
    assert scale_factor(100, 4000, 688, 2000) == pytest.approx(2000 / 4000)  # cap on the longer side


def test_maps_per_scale_have_the_backbone_stride(backbone):
    image = np.zeros((96, 128, 3), np.uint8)
    maps = compute_feature_maps(backbone, image, [96, 192], 2000)
    assert [m.image_size for m in maps] == [(96, 128), (192, 256)]
    for m in maps:
        c, h, w = m.features.shape
        assert c == backbone.out_channels
        assert abs(h - m.image_size[0] / backbone.stride) <= 1 and abs(w - m.image_size[1] / backbone.stride) <= 1


def test_too_small_image_is_a_clear_error(backbone):
    with pytest.raises(ImageTooSmallError, match="tiny.png"):
        compute_feature_maps(backbone, np.zeros((4, 4, 3), np.uint8), [96], 2000, name="tiny.png")


def test_cache_resumes_and_detects_stale_images(tmp_path, backbone):
    rec = write_image(tmp_path / "a.png")
    key = feature_cache_key("tiny", "w", "none", [96], 2000, "float16")
    cache = FeatureCache(tmp_path / "cache", key)
    first = cached_feature_maps(cache, backbone, rec, [96], 2000, read_image)
    entry = cache.dir / "a.npz"
    assert entry.exists()
    mtime = entry.stat().st_mtime_ns
    again = cached_feature_maps(cache, backbone, rec, [96], 2000, read_image)
    assert entry.stat().st_mtime_ns == mtime  # served from the cache
    torch.testing.assert_close(first[0].features, again[0].features)
    write_image(tmp_path / "a.png", seed=1)  # image content changes: entry is stale
    changed = cached_feature_maps(cache, backbone, rec, [96], 2000, read_image)
    assert not torch.equal(changed[0].features, first[0].features)
    # parameters change -> another cache folder
    assert feature_cache_key("tiny", "w", "none", [96, 192], 2000, "float16") != key
    # a corrupt entry is recomputed, not fatal
    entry.write_bytes(b"broken")
    assert cache.load("a", None) is None


def test_pool_windows_uses_each_windows_scale(backbone):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    maps = compute_feature_maps(backbone, image, [96, 288], 2000)
    windows = torch.tensor([[0, 0, 20, 20], [0, 0, 128, 96], [30, 20, 90, 80]], dtype=torch.float32)
    pool = SpatialPyramidPool([6, 3, 2, 1])
    out = pool_windows(maps, windows, pool, backbone.grid, 224)
    chosen = select_scales(windows, [m.factor for m in maps], 224)
    for i, s in enumerate(chosen.tolist()):
        f = maps[s].features
        cells = map_windows_to_features(windows[i:i + 1] * maps[s].factor, backbone.grid, f.shape[1], f.shape[2])
        torch.testing.assert_close(out[i:i + 1], pool(f, cells))
    assert pool_windows(maps, torch.zeros(0, 4), pool, backbone.grid, 224).shape == (0, out.shape[1])


def test_match_windows():
    iou, arg = match_windows(np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32),
                             np.array([[0, 0, 10, 20], [20, 20, 30, 30]], np.float32))
    np.testing.assert_allclose(iou, [0.5, 1.0])
    assert arg.tolist() == [0, 1]
    iou, _ = match_windows(np.zeros((3, 4), np.float32), np.zeros((0, 4), np.float32))
    assert iou.tolist() == [0, 0, 0]
