"""detector/training/train.py and context.py: mirrored training images, the windows the
stages train on, conv fine-tuning, the memory budgets."""
import dataclasses

import numpy as np
import pytest

from detector.config import load_detector_config
from detector.data import make_synthetic_voc
from detector.data.mirror import FLIP_SUFFIX, flipped_record
from detector.training.context import collect_training_windows, regression_windows
from helpers import prepared_context, rules_context


def test_flipped_record_mirrors_the_boxes_only(tmp_path):
    from detector.data import load_dataset
    data = make_synthetic_voc(tmp_path / "d", num_train=1, num_test=0, seed=1)
    r = load_dataset(data, "trainval")[0]
    f = flipped_record(r)
    assert f.image_id == r.image_id + FLIP_SUFFIX and f.path == r.path
    np.testing.assert_allclose(f.boxes[:, [2, 0]], r.width - r.boxes[:, [0, 2]])
    np.testing.assert_array_equal(f.boxes[:, [1, 3]], r.boxes[:, [1, 3]])
    assert f.labels.tolist() == r.labels.tolist()


def test_context_trains_on_mirrors_with_mirrored_pixels_and_windows(tmp_path):
    data = make_synthetic_voc(tmp_path / "d", num_train=3, num_test=0, seed=2)
    cfg = load_detector_config(None, [f"data.root={data}", f"workdir={tmp_path / 'run'}", "backbone.name=tiny",
                                      "features.scales=[96]", "proposals.max_windows=30",
                                      "proposals.workers=1"])
    ctx = prepared_context(cfg)
    assert cfg.data.flip and ctx.num_images == 3 and len(ctx.records) == 6
    original, mirror = ctx.records[0], ctx.records[3]
    assert mirror.image_id == original.image_id + FLIP_SUFFIX
    np.testing.assert_array_equal(ctx.images[mirror.image_id].pixels(),
                                  ctx.images[original.image_id].pixels()[:, ::-1])
    w = original.width
    np.testing.assert_allclose(ctx.windows(mirror)[:, [0, 2]], w - ctx.windows(original)[:, [2, 0]])
    assert ctx.digest(mirror) == ctx.digest(original)
    assert len(list(ctx.features.cache.dir.glob("*.npz"))) == 6  # one conv5 entry per image and mirror
    assert original.image_id + FLIP_SUFFIX in ctx.common_parts["data"]["images"]
    # A mirror's pool5 comes from the mirrored image's maps.
    pooled = ctx.pool5(mirror, ctx.windows(mirror)[:4])
    assert pooled.shape == (4, ctx.features.output_dim)


def test_training_windows_at_random_scales_keep_regression_at_the_selected_scale(tmp_path):
    data = make_synthetic_voc(tmp_path / "d", num_train=2, num_test=0, seed=4)
    base = [f"data.root={data}", f"workdir={tmp_path / 'run'}", "backbone.name=tiny", "data.flip=false",
            "features.scales=[96,160]", "proposals.max_windows=40", "proposals.workers=1"]
    random_ctx = prepared_context(load_detector_config(None, base + ["finetune.sampler=bank"]))
    fixed_ctx = prepared_context(load_detector_config(None, base + ["finetune.sampler=bank",
                                                                    "finetune.random_scale=false"]))
    random, fixed = (collect_training_windows(c, c.test_config.finetune) for c in (random_ctx, fixed_ctx))
    assert random.fg.shape == fixed.fg.shape and len(random.fg) > 0
    assert not np.array_equal(random.bg.numpy(), fixed.bg.numpy())  # fine-tuning windows moved scale
    for a, b in zip(regression_windows(random_ctx, random_ctx.test_config.bbox),
                    regression_windows(fixed_ctx, fixed_ctx.test_config.bbox), strict=True):
        np.testing.assert_array_equal(a.features, b.features)  # regression did not


def test_conv_fine_tuning_changes_the_trunk_and_the_features_after_it(tmp_path):
    from detector.model import load_model
    from detector.training.train import train
    data = make_synthetic_voc(tmp_path / "d", num_train=6, num_test=0, seed=5)
    overrides = [f"data.root={data}", f"workdir={tmp_path / 'run'}", "backbone.name=tiny", "data.flip=false",
                 "features.scales=[96,128]", "proposals.max_windows=40", "proposals.workers=1",
                 "finetune.hidden=32", "finetune.iterations=15", "finetune.conv_layers=1",
                 "finetune.batch_size=32", "svm.initial_negatives=20"]
    cfg = load_detector_config(None, overrides)
    result = train(cfg, progress=False)
    from detector.build import build_config_backbone
    before = build_config_backbone(cfg)
    model = load_model(result.model_path)
    assert model.backbone.digest() != before.digest()  # the last block learnt
    assert not any(p.requires_grad for p in model.backbone.parameters())  # frozen again
    caches = sorted(p.name for p in (tmp_path / "run" / "cache" / "conv5").iterdir())
    # Only the fine-tuned trunk's maps: conv fine-tuning reads no pre-trained conv5 map.
    assert len(caches) == 1
    assert result.stats["finetune"]["conv_layers"] == 1 and "conv5_cache_finetuned" in result.timings
    ft = result.stats["finetune"]  # the windows drawn (15 steps of 32), of every image's labelled ones
    assert 0 < ft["distinct_windows"] <= min(15 * 32, ft["eligible_windows"])
    assert 0 < ft["images"] <= ft["eligible_images"] == 6
    assert "conv5_cache" not in result.timings
    again = train(cfg, progress=False)
    assert sorted(again.reused_stages) == ["bbox", "finetune", "svm"]
    assert load_model(again.model_path).backbone.digest() == model.backbone.digest()


def test_the_bank_stays_under_its_memory_budget():
    from detector.config import load_detector_config
    from detector.training.context import MB, bank_caps

    cfg = load_detector_config(None, ["finetune.bank_max_mb=100"])
    dim = 4800
    # Few images: the per-image caps as configured.
    assert bank_caps(cfg.finetune, 10, dim) == (cfg.finetune.bank_fg_per_image, cfg.finetune.bank_bg_per_image)
    for images in (100, 1000, 10022):  # VOC 2007 trainval with mirrors: 10022
        fg, bg = bank_caps(cfg.finetune, images, dim)
        assert images * (fg + bg) * dim * 2 <= 100 * MB or (fg, bg) == (1, 1)
        if bg >= 30:  # shrunk in proportion (integer rounding aside)
            assert fg / bg == __import__("pytest").approx(64 / 192, rel=0.1)
    assert bank_caps(cfg.finetune, 1000, dim)[1] < bank_caps(cfg.finetune, 100, dim)[1]


# -- the official data rules (data.difficult_stages, data.flip_stages) and bbox.norm_windows ---------

def svm_images(ctx):
    from detector.build import build_head
    from detector.training.context import svm_training_images
    head = build_head(ctx.test_config, ctx.features.output_dim, len(ctx.class_names))
    return list(svm_training_images(ctx, head, ctx.test_config.svm.feature)())


def test_difficult_objects_are_in_the_stages_that_name_them(tmp_path):
    default = rules_context(tmp_path)
    official = rules_context(tmp_path, "data.difficult_stages=[finetune,svm,bbox]")
    first = default.records[0]
    difficult = first.boxes[first.difficult]
    assert len(difficult) == 2 and len(first.boxes) == 4

    def regression_targets(ctx):  # the streamed regression's windows' gt boxes
        return {tuple(b) for item in regression_windows(ctx, ctx.test_config.bbox) for b in item.gt_boxes.tolist()}
    hard = {tuple(b) for b in difficult.tolist()}
    assert not hard & regression_targets(default)  # left out: never a regression target
    assert hard <= regression_targets(official)    # in: each is its own window's target (IoU 1)
    # Fine-tuning: its windows start with the ground truth it learns from, the difficult boxes
    # too in the official rule, which makes them and the windows on them positives.
    from detector.training.context import labelled_windows
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(labelled_windows(official, first, official.test_config.finetune, rng)[0][:4], first.boxes)
    np.testing.assert_array_equal(labelled_windows(default, first, default.test_config.finetune, rng)[0][:2], first.boxes[~first.difficult])
    assert len(collect_training_windows(official, official.test_config.finetune).fg) > \
        len(collect_training_windows(default, default.test_config.finetune).fg)
    # SVM positives: a difficult object is flagged (left out) by default, not in the official rule.
    assert svm_images(default)[0].gt_difficult.tolist() == first.difficult.tolist()
    assert not svm_images(official)[0].gt_difficult.any()


def test_mirrors_for_fine_tuning_only(tmp_path):
    everywhere_ctx = rules_context(tmp_path / "a")
    no_mirrors_ctx = rules_context(tmp_path / "b", "data.flip=false")
    ctx = rules_context(tmp_path / "c", "data.flip_stages=[finetune]")
    everywhere, official = (collect_training_windows(c, c.test_config.finetune) for c in (everywhere_ctx, ctx))
    # Fine-tuning sees every image and mirror, as before; regression only the originals.
    np.testing.assert_array_equal(official.fg.numpy(), everywhere.fg.numpy())

    def regression(c):  # the streamed regression's windows: (record, boxes, features) per image
        return [(c.records[item.image].image_id, item.boxes, item.features) for item in regression_windows(c, c.test_config.bbox)]
    official_reg, no_mirrors_reg = regression(ctx), regression(no_mirrors_ctx)
    assert [r[0] for r in official_reg] == [r[0] for r in no_mirrors_reg] == [r.image_id for r in ctx.verified.records]
    for a, b in zip(official_reg, no_mirrors_reg):
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(a[2], b[2])
    assert len(regression(everywhere_ctx)) == 2 * len(no_mirrors_reg)
    assert [im.image_id for im in svm_images(ctx)] == [r.image_id for r in ctx.verified.records]


def test_random_norm_windows_measure_every_window_of_a_small_set(tmp_path):
    """bbox.norm_windows=random: the streamed regressors' feature scale is target_norm over the
    mean norm of random windows (here every window), not of the regression windows."""
    from detector.build import build_head
    from detector.training.train import BOX_REGRESSION, TrainingRun, stage_sections, train_bbox_stage
    from detector.training.context import random_window_norm, training_gt

    def regressors(c):
        run = TrainingRun(c, build_head(c.test_config, c.features.output_dim, len(c.class_names)),
                          stage_sections(c.test_config))
        train_bbox_stage(run, run.config_of(BOX_REGRESSION))
        return run.regressors
    ctx = rules_context(tmp_path, "bbox.norm_windows=random", "data.flip=false")
    # 3 images (<= 200), <= 200 windows each (gt + 30 proposals): every window counts.
    norms = [np.linalg.norm(ctx.pool5(r, np.concatenate([training_gt(r)[0], ctx.windows(r)])).numpy(), axis=1)
             for r in ctx.records]
    mean_norm = float(np.concatenate(norms).mean())
    assert random_window_norm(ctx) == pytest.approx(mean_norm, rel=1e-5)
    target = ctx.test_config.svm.target_norm
    assert regressors(ctx).feature_scale == pytest.approx(target / mean_norm, rel=1e-5)
    # The default: the regression windows' own mean norm (another scale on this set).
    default = rules_context(tmp_path, "data.flip=false")
    reg_norm = np.concatenate([np.linalg.norm(item.features, axis=1) for item in regression_windows(default, default.test_config.bbox)])
    assert regressors(default).feature_scale == pytest.approx(target / float(reg_norm.mean()), rel=1e-5)
    assert abs(reg_norm.mean() - mean_norm) > 1e-3 * mean_norm


def test_svm_features_run_each_distinct_pool5_vector_once_and_match_the_fc_layers(tmp_path, monkeypatch):
    """Windows on the same cells share one pool5 vector: the fc layers see it once, and every
    window gets its features, as computing them all would give (up to the GEMM's rounding)."""
    from detector.build import build_head
    from detector.training.context import svm_training_images
    ctx = rules_context(tmp_path, "data.flip=false")
    cfg = ctx.test_config
    head = build_head(cfg, ctx.features.output_dim, len(ctx.class_names)).eval()
    record = ctx.records[0]
    real_windows = ctx.windows
    # The first windows twice: duplicates whose pool5 rows are equal by construction.
    monkeypatch.setattr(ctx, "windows", lambda r: np.concatenate([real_windows(r), real_windows(r)[:5]]))
    rows = []
    real_features = head.features
    monkeypatch.setattr(head, "features", lambda x, layer: (rows.append(len(x)), real_features(x, layer))[1])
    image = next(iter(svm_training_images(ctx, head, cfg.svm.feature)()))
    both = np.concatenate([record.boxes, ctx.windows(record)]).astype(np.float32)
    pooled = ctx.pool5(record, both)
    assert rows[0] <= len(both) - 5  # the 5 copies (at least) not through the fc layers again
    np.testing.assert_array_equal(image.features[-5:], image.features[:5])  # copies: the same row, bit for bit
    expected = real_features(pooled, cfg.svm.feature).numpy()
    np.testing.assert_allclose(np.concatenate([image.gt_features, image.features]), expected, rtol=1e-5, atol=1e-6)


# -- svm.replay_mb: the first pass's features replayed by the mining rounds (issue 23) ------------

def test_replayed_svm_features_are_the_first_passes_and_train_the_same_svms(tmp_path):
    from detector.build import build_head
    from detector.training.context import svm_training_images
    from detector.training.svm import train_svms
    ctx = rules_context(tmp_path)  # 3 images and 3 mirrors
    cfg = ctx.test_config
    head = build_head(cfg, ctx.features.output_dim, len(ctx.class_names)).eval()
    replay = svm_training_images(ctx, head, cfg.svm.feature, replay_mb=1024)
    first = list(replay())
    assert replay.replayed == len(first) == 6
    again = list(replay())
    assert all(a is b for a, b in zip(first, again, strict=True))  # the same objects, not recomputed
    # A budget that holds two images: the first two replayed, the rest computed again, equal.
    two = sum(im.features.nbytes + im.gt_features.nbytes for im in first[:2]) / (1 << 20)
    partial = svm_training_images(ctx, head, cfg.svm.feature, replay_mb=two)
    a, b = list(partial()), list(partial())
    assert partial.replayed == 2 and [x is y for x, y in zip(a, b)] == [True, True, False, False, False, False]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.features, y.features)
    # The SVMs trained with and without the replay are the same.
    never = svm_training_images(ctx, head, cfg.svm.feature, replay_mb=0)
    svm_cfg = dataclasses.replace(cfg.svm, initial_negatives=5)
    with_replay, _ = train_svms(svm_training_images(ctx, head, cfg.svm.feature, 1024), len(ctx.class_names),
                                svm_cfg, progress=False)
    without, _ = train_svms(never, len(ctx.class_names), svm_cfg, progress=False)
    assert never.replayed == 0
    np.testing.assert_array_equal(with_replay.weights, without.weights)
    np.testing.assert_array_equal(with_replay.bias, without.bias)


def test_svm_random_norm_windows_give_the_norm_and_features_computed_on_demand(tmp_path):
    """svm.norm_windows=random: the SVMs' mean norm from random windows' fc features (here every
    window of the small set), and the collect pass, given it, computes the seeds' rows only."""
    from detector.build import build_head
    from detector.training.context import random_window_norm, svm_features, svm_training_images, training_gt
    from detector.training.svm import LazyFeatures, train_svms
    from detector.training.train import SVMS_ON_FC, TrainingRun, stage_sections, train_svm_stage
    ctx = rules_context(tmp_path, "svm.norm_windows=random", "data.flip=false")
    cfg = ctx.test_config
    head = build_head(cfg, ctx.features.output_dim, len(ctx.class_names)).eval()
    features = svm_features(head, cfg.svm.feature)
    # 3 images (<= 200), gt + 30 proposals each (<= 200): every window counts.
    norms = [np.linalg.norm(head.features(ctx.pool5(r, np.concatenate([training_gt(r)[0], ctx.windows(r)])),
                                          cfg.svm.feature).numpy(), axis=1) for r in ctx.records]
    mean_norm = float(np.concatenate(norms).mean())
    assert random_window_norm(ctx, "svm", features) == pytest.approx(mean_norm, rel=1e-5)
    # Lazy features: the same values as computed up front, rows on demand.
    lazy, eager = (list(svm_training_images(ctx, head, cfg.svm.feature, lazy=flag)()) for flag in (True, False))
    for a, b in zip(lazy, eager, strict=True):
        assert isinstance(a.features, LazyFeatures) and a.features.shape == b.features.shape
        np.testing.assert_allclose(a.features.rows(np.array([0, 3])), b.features[[0, 3]], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a.features.full(), b.features, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a.gt_features, b.gt_features, rtol=1e-5, atol=1e-6)  # other GEMM batches
    svm_cfg = dataclasses.replace(cfg.svm, initial_negatives=5)
    (w_lazy, s_lazy), (w_eager, _) = (
        train_svms(svm_training_images(ctx, head, cfg.svm.feature, lazy=flag), len(ctx.class_names), svm_cfg,
                   progress=False, mean_norm=mean_norm) for flag in (True, False))
    np.testing.assert_allclose(w_lazy.weights, w_eager.weights, rtol=1e-4, atol=1e-6)
    assert s_lazy["mean_norm"] == mean_norm
    # The stage: the random norm measured, the features lazy, the scale target_norm / that norm.
    run = TrainingRun(ctx, head, stage_sections(cfg))
    train_svm_stage(run, run.config_of(SVMS_ON_FC))
    assert run.stats["svm"]["mean_norm_given"]
    assert run.svms.feature_scale == pytest.approx(cfg.svm.target_norm / mean_norm, rel=1e-5)


def test_conv_window_use_counts_labelled_windows_drawn_per_image():
    from detector.training.conv_finetune import ConvSample, conv_window_use
    from detector.training.fc_finetune import WindowLabels

    def sample(fg, bg, n=10):
        return ConvSample(None, np.zeros((n, 4), np.float32),
                          WindowLabels(np.array(fg, np.int64), np.ones(len(fg), np.int64), np.array(bg, np.int64)))

    a, only_bg, c = sample([0, 1], [5, 6, 7]), sample([], [2, 3]), sample([4], [8, 9])
    drawn_a, drawn_c = np.zeros(10, bool), np.zeros(10, bool)
    drawn_a[[1, 5, 3]] = True  # 3 is no labelled window of a: not counted
    use = conv_window_use([a, only_bg, c], [a, c], [drawn_a, drawn_c])
    # only_bg is never drawn (no positive) but its windows are eligible; c had no draw.
    assert (use.distinct_windows, use.eligible_windows, use.images, use.eligible_images) == (2, 10, 1, 3)


# -- proposals.train_max_side: the training splits' own search (issue 23) -----------------------

def test_training_search_is_train_max_side_and_the_model_keeps_max_side(tmp_path):
    import dataclasses as dc

    from detector.images import read_image
    from proposals import propose_with_config

    ctx = rules_context(tmp_path, "data.flip=false", "proposals.max_side=0", "proposals.train_max_side=128")
    search = ctx.settings.proposals.for_training()
    assert (search.max_side, search.train_max_side) == (128, -1)
    # The model file's config (train() takes ctx.settings.proposals) keeps the test search.
    assert (ctx.settings.proposals.max_side, ctx.settings.proposals.train_max_side) == (0, 128)
    assert ctx.common_parts["proposals"]["max_side"] == 128  # stage keys hold the training windows' search
    full = dc.replace(ctx.settings.proposals, train_max_side=-1)
    differs = 0
    for r in ctx.verified.records:  # 256 x 192 images: the training search ran on 128 x 96
        pixels = read_image(r.path)
        np.testing.assert_array_equal(ctx.windows(r), propose_with_config(pixels, search))
        differs += not np.array_equal(ctx.windows(r), propose_with_config(pixels, full))
    assert differs > 0
