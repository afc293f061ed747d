"""Tests for detector/training/svm.py and detector/training/negatives.py: hard-negative mining on toy data and its rules."""
from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pytest
import torch

from detector.config import SVMConfig
from detector.training.svm import KEY_STRIDE, HardNegativeTrainer, LinearSVMs, SVMDataError, TrainImage, train_svms

D = 8
# Toy feature space: positives of class k sit at 4 e_k; easy negatives at 4 e_5;
# hard negatives of class 0 share its direction (2.5 e_0) but carry 2.5 e_3,
# which only a model that has seen them learns to penalise.
POS_MEAN = [4 * np.eye(D)[0], 4 * np.eye(D)[1]]
EASY_MEAN = 4 * np.eye(D)[5]
HARD_MEAN = 2.5 * np.eye(D)[0] + 2.5 * np.eye(D)[3]
NUM_HARD = 2  # hard negatives are windows 0 and 1 of every image
NUM_EASY = 30


def tile_boxes(n: int, x0: float = 100.0) -> np.ndarray:
    """n disjoint 10x10 windows in a row starting at x0 (IoU 0 with each other)."""
    x = x0 + 12.0 * np.arange(n, dtype=np.float32)
    return np.stack([x, np.zeros(n), x + 10, np.full(n, 10.0)], axis=1).astype(np.float32)


def toy_image(rng: np.random.Generator, image_id: str) -> TrainImage:
    noise = lambda n: rng.normal(0, 0.3, (n, D))
    feats = np.concatenate([HARD_MEAN + noise(NUM_HARD), EASY_MEAN + noise(NUM_EASY)])
    gt_feats = np.stack([POS_MEAN[0], POS_MEAN[1]]) + noise(2)
    return TrainImage(image_id=image_id, features=feats.astype(np.float32),
                      boxes=tile_boxes(len(feats)),
                      gt_features=gt_feats.astype(np.float32),
                      gt_boxes=np.array([[0, 20, 10, 30], [20, 20, 30, 30]], np.float32),
                      gt_labels=np.array([0, 1]), gt_difficult=np.zeros(2, bool))


def toy_images(n: int = 30, seed: int = 1) -> list[TrainImage]:
    rng = np.random.default_rng(seed)
    return [toy_image(rng, f"img{i:03d}") for i in range(n)]


def held_out(seed: int = 99, n: int = 200):
    rng = np.random.default_rng(seed)
    noise = lambda: rng.normal(0, 0.3, (n, D))
    return POS_MEAN[0] + noise(), EASY_MEAN + noise(), HARD_MEAN + noise()


CFG = SVMConfig(initial_negatives=3)


def test_mining_finds_hard_negatives_and_separates_held_out_data():
    images = toy_images()
    trainer = HardNegativeTrainer(2, CFG, seed=0)
    trainer.collect(images)
    seed_model = trainer.model()
    trainer.mine(images)
    model = trainer.model()
    pos, easy, hard = held_out()
    # Without mining the hard negatives look like class 0 (the test is meaningful).
    assert (seed_model.score(hard)[:, 0] > 0).mean() > 0.5
    # After one mining round everything is classified correctly.
    assert (model.score(pos)[:, 0] > 0).mean() >= 0.97
    assert (model.score(easy)[:, 0] < 0).mean() >= 0.99
    assert (model.score(hard)[:, 0] < 0).mean() >= 0.97
    # Nearly every hard negative was new to the cache when mined.
    assert trainer.stats["hard_negatives_added"][0][0] >= 0.9 * NUM_HARD * len(images)


def test_mining_adds_the_hard_candidates_only():
    images = toy_images()
    trainer = HardNegativeTrainer(2, dataclasses.replace(CFG, evict_threshold=-1e9), seed=0)
    trainer.collect(images)
    seeds = set(trainer.caches[0].arrays()[1].tolist())
    trainer.mine(images)
    keys = set(trainer.caches[0].arrays()[1].tolist())
    hard_keys = {trainer.image_index[im.image_id] * KEY_STRIDE + j
                 for im in images for j in range(NUM_HARD)}
    assert hard_keys <= keys
    # Few easy windows score above -1.0001 (30 per image are candidates).
    assert len(keys - seeds - hard_keys) < 0.1 * NUM_EASY * len(images)


def test_easy_negatives_are_evicted():
    images = toy_images(10)
    # Very easy negatives far on the other side, as window 2 of each image.
    images = [dataclasses.replace(im, features=np.concatenate(
        [im.features[:2], -20 * np.eye(D, dtype=np.float32)[[0]], im.features[3:]]))
        for im in images]
    trainer = HardNegativeTrainer(2, SVMConfig(initial_negatives=1000), seed=0)
    trainer.collect(images)
    update = [u for u in trainer.stats["updates"] if u["class"] == 0][-1]
    assert update["num_neg_kept"] < update["num_neg"]
    x, keys = trainer.caches[0].arrays()
    scores = trainer.model().score(x)[:, 0]
    assert np.all(scores >= CFG.evict_threshold - 1e-4)
    very_easy = {trainer.image_index[im.image_id] * KEY_STRIDE + 2 for im in images}
    assert not very_easy & set(keys.tolist())
    assert trainer.model().score(-20 * np.eye(D)[[0]])[0, 0] < CFG.evict_threshold








def test_neg_nms_in_training():
    base = toy_images(2)
    near = base[0].boxes[5] + np.array([0, 0, 0, 0.5], np.float32)  # IoU 0.95 with window 5
    images = [dataclasses.replace(im, boxes=np.concatenate([im.boxes, near[None]]),
                                  features=np.concatenate([im.features, im.features[5:6]]))
              for im in base]
    cfg = SVMConfig(initial_negatives=1000, evict_threshold=-1e9)
    trainer = HardNegativeTrainer(2, cfg, seed=0)
    trainer.collect(images)
    keys = set(trainer.caches[0].arrays()[1].tolist())
    last = len(images[0].boxes) - 1
    for im in images:
        i = trainer.image_index[im.image_id] * KEY_STRIDE
        assert i + 5 in keys and i + last not in keys  # equal scores: the lower index stays


def test_feature_scale_gives_target_norm():
    images = toy_images(4)
    images = [dataclasses.replace(im, features=im.features / np.linalg.norm(
        im.features, axis=1, keepdims=True) * np.where(np.arange(len(im.features)) % 2, 6, 2)[:, None]
        .astype(np.float32)) for im in images]  # norms alternate 2, 6: mean 4
    model, stats = train_svms(lambda: iter(images), 2, CFG, progress=False)
    assert model.feature_scale == pytest.approx(20 / 4, rel=1e-5)
    assert stats["mean_norm"] == pytest.approx(4, rel=1e-5)
    scaled = np.concatenate([im.features for im in images]) * model.feature_scale
    assert np.linalg.norm(scaled, axis=1).mean() == pytest.approx(CFG.target_norm, rel=1e-5)


def test_state_dict_round_trip(tmp_path):
    images = toy_images(5)
    model, _ = train_svms(lambda: iter(images), 2, CFG, progress=False)
    torch.save(model.to_state_dict(), tmp_path / "svm.pt")
    loaded = LinearSVMs.from_state_dict(torch.load(tmp_path / "svm.pt", weights_only=True))
    np.testing.assert_array_equal(loaded.weights, model.weights)
    np.testing.assert_array_equal(loaded.bias, model.bias)
    assert loaded.feature_scale == model.feature_scale
    x = np.random.default_rng(0).normal(size=(7, D)).astype(np.float32)
    np.testing.assert_array_equal(loaded.score(x), model.score(x))
    with pytest.raises(ValueError, match="bias"):
        LinearSVMs.from_state_dict({"weights": model.weights, "feature_scale": 1.0})


def test_class_without_positives_never_fires(caplog):
    images = toy_images(5)
    with caplog.at_level(logging.WARNING, logger="detector.training.svm"):
        model, stats = train_svms(lambda: iter(images), 3, CFG, progress=False)
    assert "class 2 has no" in caplog.text
    assert np.all(model.weights[2] == 0) and model.bias[2] == -np.inf
    assert np.all(model.score(images[0].features)[:, 2] == -np.inf)
    assert np.isfinite(model.score(images[0].features)[:, :2]).all()
    assert stats["num_positives"] == [5, 5, 0]


def test_log_names_the_class(caplog):
    images = toy_images(5)
    with caplog.at_level(logging.WARNING, logger="detector.training.svm"):
        train_svms(lambda: iter(images), 3, CFG, progress=False, class_names=["a", "b", "circle"])
    assert "SVM class 'circle' (2) has no (non-difficult) positives" in caplog.text
    assert caplog.text.count("has no") == 1
    with pytest.raises(ValueError, match="2 class names for 3 classes"):
        train_svms(lambda: iter(images), 3, CFG, progress=False, class_names=["a", "b"])


def test_difficult_boxes_are_not_positives():
    images = [dataclasses.replace(im, gt_difficult=np.array([i % 2 == 0, False]))
              for i, im in enumerate(toy_images(6))]
    _, stats = train_svms(lambda: iter(images), 2, CFG, progress=False)
    assert stats["num_positives"] == [3, 6]


def test_deterministic_for_fixed_seed():
    images = toy_images(8)
    runs = [train_svms(lambda: iter(images), 2, CFG, seed=3, progress=False) for _ in range(2)]
    np.testing.assert_array_equal(runs[0][0].weights, runs[1][0].weights)
    np.testing.assert_array_equal(runs[0][0].bias, runs[1][0].bias)
    assert runs[0][1]["cache_sizes"] == runs[1][1]["cache_sizes"]
    json.dumps(runs[0][1])  # the statistics are plain, loggable types


def test_retrain_limit_and_cache_bound():
    images = toy_images(20)
    cfg = SVMConfig(initial_negatives=1000, evict_threshold=-1e9, hard_threshold=-1e9)
    trainer = HardNegativeTrainer(2, cfg, seed=0, retrain_limit=50, max_cached_negatives=40)
    trainer.collect(images)
    sizes = trainer.stats["cache_sizes"][-1]
    assert sizes == [40, 40]
    # The reservoir samples the whole stream, not just the first images.
    keys = trainer.caches[0].arrays()[1]
    assert len(np.unique(keys // KEY_STRIDE)) >= 5
    trainer.mine(images)
    mid_round = [u for u in trainer.stats["updates"] if u["round"] == 1 and u["image"] is not None]
    assert mid_round and all(u["num_neg"] > 50 for u in mid_round)
    assert all(u["num_neg_kept"] <= 40 for u in trainer.stats["updates"])


def test_bad_image_raises_with_image_id():
    images = toy_images(3)
    bad = dataclasses.replace(images[1], features=images[1].features[:, :5])
    with pytest.raises(SVMDataError, match="img001.*dimension 5"):
        train_svms(lambda: iter([images[0], bad]), 2, CFG, progress=False)
    bad = dataclasses.replace(images[1], gt_labels=np.array([0, 7]))
    with pytest.raises(SVMDataError, match="img001.*gt_labels"):
        train_svms(lambda: iter([bad]), 2, CFG, progress=False)


def test_without_seed_negatives_mining_starts_like_rcnn():
    # initial_negatives = 0: an untrained class scores 0 > hard_threshold, so
    # the first image's candidates all enter the cache (R-CNN's first_time).
    images = toy_images()
    cfg = SVMConfig(initial_negatives=0)
    trainer = HardNegativeTrainer(2, cfg, seed=0)
    trainer.collect(images)
    assert not trainer.trained.any() and trainer.model().bias[0] == -np.inf
    trainer.mine(images)
    first = trainer.stats["updates"][0]
    assert first["image"] == 0 and first["num_neg"] == NUM_HARD + NUM_EASY + 1
    pos, easy, hard = held_out()
    model = trainer.model()
    assert (model.score(pos)[:, 0] > 0).mean() >= 0.97
    assert (model.score(np.concatenate([easy, hard]))[:, 0] < 0).mean() >= 0.97




def test_non_convergence_is_logged(monkeypatch, caplog):
    import detector.training.svm as svm
    monkeypatch.setattr(svm, "SOLVER_MAX_ITER", 1)
    images = toy_images(10)
    with caplog.at_level(logging.WARNING, logger="detector.training.svm"):
        _, stats = train_svms(lambda: iter(images), 2, SVMConfig(C=10.0, initial_negatives=1000),
                              progress=False)
    assert "did not converge" in caplog.text
    assert not all(u["converged"] for u in stats["updates"])


def test_iou_035_window_is_negative_for_other_class_only():
    base = toy_images(3)
    window = np.array([[0, 20, 10, 48.57]], np.float32)  # IoU 0.35 with the class-0 gt box
    images = [dataclasses.replace(im, boxes=np.concatenate([im.boxes, window]),
                                  features=np.concatenate([im.features, EASY_MEAN[None]]).astype(
                                      np.float32)) for im in base]
    cfg = SVMConfig(initial_negatives=1000, evict_threshold=-1e9)  # keep every negative
    trainer = HardNegativeTrainer(2, cfg, seed=0)
    trainer.collect(images)
    trainer.mine(images)
    w = len(images[0].boxes) - 1
    keys = {trainer.image_index[im.image_id] * KEY_STRIDE + w for im in images}
    assert not keys & set(trainer.caches[0].arrays()[1].tolist())
    assert keys <= set(trainer.caches[1].arrays()[1].tolist())
    # The class-1 gt box (window index N + 1) is a negative of class 0.
    gt1 = {trainer.image_index[im.image_id] * KEY_STRIDE + len(im.boxes) + 1 for im in images}
    assert gt1 <= set(trainer.caches[0].arrays()[1].tolist())


def test_max_negatives_per_class_bounds_the_caches_and_says_what_it_dropped():
    images = toy_images(20)
    loose = dataclasses.replace(CFG, initial_negatives=1000, evict_threshold=-1e9, hard_threshold=-1e9)
    _, unbounded = train_svms(lambda: iter(images), 2, loose, progress=False)
    assert unbounded["max_negatives_per_class"] == 0 and unbounded["negatives_dropped_by_cap"] == [0, 0]
    assert not unbounded["negative_cap_bound"] and min(unbounded["cache_sizes"][-1]) > 40
    bounded_cfg = dataclasses.replace(loose, max_negatives_per_class=40)
    _, bounded = train_svms(lambda: iter(images), 2, bounded_cfg, progress=False)
    assert bounded["negative_cap_bound"] and min(bounded["negatives_dropped_by_cap"]) > 0
    assert all(u["num_neg_kept"] <= 40 for u in bounded["updates"])
    json.dumps(bounded)


def test_seed_negatives_stay_within_their_byte_budget_however_many_images():
    from detector.training.svm import seed_capacity

    assert seed_capacity(2048, 20, 2048) == 13107  # VOC 2007's 20 classes, fc7 of 2048: 2 GiB of seeds
    assert seed_capacity(0, 20, 2048) > 10**12  # 0: no bound
    loose = dataclasses.replace(CFG, initial_negatives=1000, evict_threshold=-1e9, hard_threshold=-1e9)
    budget = 2 * 50 * D * 4 / 2**20  # MiB of 50 rows per class, 2 classes
    for n in (10, 40):  # the seeds offered grow with the images; those kept do not
        trainer = HardNegativeTrainer(2, dataclasses.replace(loose, seed_mb=budget), seed=0)
        trainer.collect(toy_images(n))
        seeds = trainer.stats["seed_negatives"]
        assert seeds["per_class_capacity"] == 50 and seeds["kept"] == [50, 50]
        assert min(seeds["offered"]) >= n * (NUM_HARD + NUM_EASY) - n  # every image offered its negatives
        assert len(np.unique(trainer.caches[0].arrays()[1] // KEY_STRIDE)) >= min(n, 5)  # from across the images
        assert trainer.stats["negatives_dropped_by_cap"] == [0, 0]  # the budget, not max_negatives_per_class
    # Both bounds set: the smaller one holds the seeds.
    both = HardNegativeTrainer(2, dataclasses.replace(loose, seed_mb=budget, max_negatives_per_class=30), seed=0)
    both.collect(toy_images(10))
    assert both.stats["seed_negatives"]["kept"] == [30, 30] and min(both.stats["negatives_dropped_by_cap"]) > 0
    # Under the default budget a small set keeps every seed, as without a bound.
    images = toy_images(20)
    default, unbounded = (train_svms(lambda: iter(images), 2, dataclasses.replace(loose, seed_mb=mb),
                                     progress=False) for mb in (SVMConfig().seed_mb, 0))
    np.testing.assert_array_equal(default[0].weights, unbounded[0].weights)
    assert default[1]["seed_negatives"]["kept"] == default[1]["seed_negatives"]["offered"]
    assert unbounded[1]["seed_negatives"]["per_class_capacity"] is None


def lazy_copy(image: TrainImage, asked: list[int]) -> TrainImage:
    """``image`` with LazyFeatures over its features, counting the rows computed into ``asked``."""
    from detector.training.svm import LazyFeatures

    def compute(idx):
        rows = image.features if idx is None else image.features[idx]
        asked.append(len(rows))
        return rows
    return dataclasses.replace(image, features=LazyFeatures(*image.features.shape, compute))


def test_lazy_features_with_a_given_norm_compute_few_rows_and_train_the_same_svms():
    images = toy_images(20)
    cfg = dataclasses.replace(CFG, initial_negatives=2)
    asked: list[int] = []
    eager = train_svms(lambda: iter(images), 2, cfg, progress=False, mean_norm=3.0)
    lazy = train_svms(lambda: (lazy_copy(im, asked) for im in images), 2, cfg, progress=False, mean_norm=3.0)
    for a, b in zip(eager[0].to_state_dict().values(), lazy[0].to_state_dict().values()):
        np.testing.assert_array_equal(a, b)
    assert eager[1]["seed_negatives"] == lazy[1]["seed_negatives"]
    # Each seed row is its window's features (proposal rows, then gt rows), some from gt boxes.
    trainer = HardNegativeTrainer(2, cfg, seed=0, mean_norm=3.0)
    trainer.collect(lazy_copy(im, []) for im in images)
    gt_seeds = 0
    for cache in trainer.caches:
        x, keys = cache.arrays()
        for row, key in zip(x, keys):
            image = images[int(key // KEY_STRIDE)]
            window = int(key % KEY_STRIDE)
            n = len(image.features)
            expected = image.features[window] if window < n else image.gt_features[window - n]
            np.testing.assert_array_equal(row, expected)
            gt_seeds += window >= n
    assert gt_seeds > 0
    assert lazy[1]["mean_norm"] == 3.0 and lazy[1]["mean_norm_given"]
    assert lazy[1]["feature_scale"] == pytest.approx(CFG.target_norm / 3.0)
    windows = sum(len(im.features) for im in images)
    collect = sum(asked[: len(asked) - len(images)])  # the mining pass asks every image for all rows
    assert asked[len(asked) - len(images):] == [len(im.features) for im in images]
    assert 0 < collect <= 2 * 2 * len(images) < windows  # seeds only: at most 2 per class and image
    # Without a given norm the collect pass needs every window (the exact mean).
    asked.clear()
    exact = train_svms(lambda: (lazy_copy(im, asked) for im in images), 2, cfg, progress=False)
    assert sum(asked) == 2 * windows and not exact[1]["mean_norm_given"]
    with pytest.raises(ValueError, match="mean_norm"):
        HardNegativeTrainer(2, cfg, mean_norm=0.0)
