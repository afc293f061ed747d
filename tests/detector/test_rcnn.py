import numpy as np
import pytest
import torch
from PIL import Image

import detector.features.rcnn_crops as rcnn
from detector.features.backbones import PREPROCESS_PRESETS
from detector.config import load_detector_config
from detector.build import build_config_backbone, build_window_features
from detector.features.pyramid import SpatialPyramidPool
from detector.records import ImageRecord
from detector.features.pool5 import ImageSource


def test_context_window_leaves_pad_pixels_of_context():
    box = np.array([100.0, 50.0, 292.0, 242.0])  # 192 x 192
    x1, y1, x2, y2 = rcnn.context_window(box, crop_size=224, context_pad=16)
    # 192 px of box + 16 px each side at the warped scale: the window grows to 224 px.
    assert (x2 - x1, y2 - y1) == pytest.approx((224.0, 224.0))
    assert ((x1 + x2) / 2, (y1 + y2) / 2) == pytest.approx((196.0, 146.0))


def test_warp_crop_places_image_and_zero_padding():
    identity = PREPROCESS_PRESETS["imagenet"].__class__("RGB", 1.0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    image = np.full((100, 100, 3), 200, np.uint8)
    # A box at the top-left corner: its context window sticks out left and top.
    crop = rcnn.warp_crop(image, np.array([0.0, 0.0, 48.0, 48.0]), identity, crop_size=64, context_pad=8)
    assert crop.shape == (3, 64, 64)
    assert crop[:, :6, :].abs().max() == 0      # outside the image: mean pixel (zero)
    assert crop[:, :, :6].abs().max() == 0
    assert torch.all(crop[:, 10:, 10:] == 200)  # inside: the image
    # A box well inside: no padding at all.
    inner = rcnn.warp_crop(image, np.array([30.0, 30.0, 60.0, 60.0]), identity, 64, 8)
    assert torch.all(inner == 200)


def test_rcnn_pool5_and_window_cache(tmp_path, monkeypatch):
    cfg = load_detector_config(None, ["backbone.name=tiny", "mode=rcnn", "rcnn.crop_size=64"])
    backbone = build_config_backbone(cfg)
    pool = SpatialPyramidPool(cfg.pool.levels)
    arr = np.random.default_rng(0).integers(0, 255, (80, 120, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    record = ImageRecord("a", tmp_path / "a.png", 120, 80)
    boxes = np.array([[0, 0, 40, 40], [30, 20, 110, 75], [5, 5, 60, 70]], np.float32)
    direct = rcnn.rcnn_pool5(backbone, arr, boxes, pool, 64, 16)
    assert direct.shape == (3, pool.output_dim(backbone.out_channels))
    # One crop alone gives the same vector as in a batch.
    torch.testing.assert_close(rcnn.rcnn_pool5(backbone, arr, boxes[1:2], pool, 64, 16), direct[1:2],
                               rtol=1e-4, atol=1e-5)
    features = build_window_features(cfg, backbone, tmp_path / "cache")
    assert isinstance(features, rcnn.CropFeatures)
    first = features.pool5(ImageSource.from_record(record), boxes)
    torch.testing.assert_close(first, direct, rtol=1e-2, atol=1e-2)  # float16 on disk
    calls = []
    real = rcnn.rcnn_pool5
    monkeypatch.setattr(rcnn, "rcnn_pool5", lambda *a, **k: calls.append(len(a[2])) or real(*a, **k))
    again = features.pool5(ImageSource.from_record(record), boxes[[2, 0]])
    assert calls == []  # every window was cached
    torch.testing.assert_close(again, first[[2, 0]])
    features.pool5(ImageSource.from_record(record), np.concatenate([boxes, [[1, 1, 30, 30]]]))
    assert calls == [1]  # only the new window is computed


def test_rcnn_mode_trains_and_detects(tmp_path):
    """The same stages on warped-crop features: trains, saves, detects, scores well."""
    from detector.data import make_synthetic_voc
    from detector.model import load_trained
    from detector.inference.split_test import EvaluationOptions, run_model_test
    from detector.training.train import train

    data = make_synthetic_voc(tmp_path / "data", num_train=16, num_test=8, seed=5)
    cfg = load_detector_config(None, [
        f"data.root={data}", f"workdir={tmp_path / 'run'}", "mode=rcnn", "backbone.name=tiny",
        "rcnn.crop_size=96", "proposals.max_windows=40", "proposals.workers=1",
        "finetune.hidden=128", "finetune.iterations=200", "finetune.bank_bg_per_image=32"])
    result = train(cfg, progress=False)
    model = load_trained(result.model_path)
    assert model.config.mode == "rcnn" and isinstance(model.detector.features, rcnn.CropFeatures)
    assert 0 < result.windows_per_train_image <= 40  # the max_windows cap
    assert any((tmp_path / "run" / "cache" / "rcnn_pool5").rglob("*.npz"))
    assert not any((tmp_path / "run" / "cache" / "conv5").rglob("*.npz"))  # no conv5 maps in R-CNN mode
    run = run_model_test(model, EvaluationOptions("test", tmp_path / "test", progress=False))
    assert run.result.mAP > 0.6, run.result.ap
    # R-CNN's test-set cache: same detections up to float16 rounding, and a
    # second pass (another model on the same backbone) runs no conv at all.
    cached = run_model_test(model, EvaluationOptions("test", tmp_path / "test_cached", progress=False,
                                                     cache_features=True))
    assert cached.result.mAP == pytest.approx(run.result.mAP, abs=0.02)
    assert any((tmp_path / "run" / "cache" / "test_features" / "rcnn_pool5").rglob("*.npz"))
    real = rcnn.rcnn_pool5
    calls = []
    rcnn.rcnn_pool5 = lambda *a, **k: calls.append(1) or real(*a, **k)
    try:
        again = run_model_test(model, EvaluationOptions("test", tmp_path / "test_again", progress=False,
                                                        cache_features=True))
    finally:
        rcnn.rcnn_pool5 = real
    assert calls == []
    assert again.result.mAP == pytest.approx(cached.result.mAP)
    assert "test_features" in (tmp_path / "test_again" / "metrics.json").read_text()


def test_backbone_digest_follows_the_weights():
    cfg = load_detector_config(None, ["backbone.name=tiny"])
    a, b = build_config_backbone(cfg), build_config_backbone(cfg)
    assert a.digest() == b.digest()
    with torch.no_grad():
        next(b.parameters()).add_(1.0)
    assert a.digest() != b.digest()


def test_window_feature_cache_key_covers_what_a_vector_depends_on(tmp_path):
    def cache_dir(overrides):
        cfg = load_detector_config(None, ["backbone.name=tiny", "mode=rcnn", *overrides])
        return build_window_features(cfg, backbone, tmp_path).cache.dir

    backbone = build_config_backbone(load_detector_config(None, ["backbone.name=tiny"]))
    base = cache_dir([])
    assert cache_dir([]) == base
    for override in ("pool.levels=[4,2,1]", "rcnn.context_pad=8", "rcnn.crop_size=160"):
        assert cache_dir([override]) != base, override
