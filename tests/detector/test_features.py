import numpy as np
import pytest
import torch

from detector.config import load_detector_config
from detector.build import build_config_backbone
from helpers import write_noise_image
from detector.features.conv_maps import FeatureCache, compute_feature_maps, feature_cache_key, scale_factor
from detector.images import ImageTooSmallError
from detector.features.pyramid import SpatialPyramidPool
from detector.records import ImageRecord
from detector.features.pool5 import ImageSource, SPPFeatures


@pytest.fixture(scope="module")
def backbone():
    return build_config_backbone(load_detector_config(None, ["backbone.name=tiny"]))


def write_image(path, seed=0, size=(128, 96)):
    write_noise_image(path, seed, size)
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
    spp = SPPFeatures(backbone, SpatialPyramidPool(), [96], 2000, cache=cache)
    first = spp.feature_maps(ImageSource.from_record(rec))
    entry = cache.dir / "a.npz"
    assert entry.exists()
    mtime = entry.stat().st_mtime_ns
    again = spp.feature_maps(ImageSource.from_record(rec))
    assert entry.stat().st_mtime_ns == mtime  # served from the cache
    torch.testing.assert_close(first[0].features, again[0].features)
    write_image(tmp_path / "a.png", seed=1)  # image content changes: entry is stale
    changed = spp.feature_maps(ImageSource.from_record(rec))
    assert not torch.equal(changed[0].features, first[0].features)
    # parameters change -> another cache folder
    assert feature_cache_key("tiny", "w", "none", [96, 192], 2000, "float16") != key
    # a corrupt entry is recomputed, not fatal
    entry.write_bytes(b"broken")
    assert cache.load("a", None) is None
