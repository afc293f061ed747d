"""The official SPP_net rules that are config values (docs/method.md, "Differences from the
official code"), each on a case worked out by hand, and the paper configs that select them."""
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from detector.build import window_rules
from detector.config import ConfigError, SVMConfig, load_detector_config, with_test_overrides
from detector import config as config_sections
from detector.inference.detector import ScoredWindows
from detector.training.negatives import find_negative_candidates, first_of_identical
from detector.features.pyramid import FeatureGrid, map_windows_to_features, select_scales
from detector.training.svm import KEY_STRIDE, HardNegativeTrainer, TrainImage
from detector.features.mapping import scale_windows
from helpers import small_detector

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PAPER_CONFIGS = ["voc2007_zf5_1scale.yaml", "voc2007_zf5_5scale.yaml"]


# -- 1. test order ---------------------------------------------------------------------------

class MoveSecondOntoFirst:
    """A box regressor that moves window 1 (told by its pooled vector) onto [0, 0, 10, 10]."""

    def apply(self, pooled, boxes, labels):
        out = boxes.copy()
        out[pooled[:, 0] == 1] = [0, 0, 10, 10]
        return out


def three_box_detections(order: str, max_per_class: int = 100):
    """One class; windows A = [0,0,10,10] (score 3), B = [6,0,16,10] (2), C = [20,0,30,10] (1).
    IoU(A, B) = 40 / 160 = 0.25: NMS at 0.3 keeps both. The regressor moves B onto A."""
    base = small_detector(with_regressors=False)
    detector = dataclasses.replace(base, regressors=MoveSecondOntoFirst(), class_names=["a"],
                                   test=config_sections.TestConfig(order=order, max_per_class=max_per_class))
    windows = torch.tensor([[0, 0, 10, 10], [6, 0, 16, 10], [20, 0, 30, 10]], dtype=torch.float32)
    pooled = torch.arange(3, dtype=torch.float32)[:, None]
    scored = ScoredWindows(windows, pooled, torch.tensor([[3.0], [2.0], [1.0]]), 100, 100)
    dets = detector.postprocess(scored)
    return dets.boxes.tolist(), dets.scores.tolist()


def test_regress_then_nms_suppresses_the_regressed_duplicate():
    # B regressed lands on A (IoU 1): the NMS on regressed boxes drops it.
    assert three_box_detections("regress_then_nms") == ([[0, 0, 10, 10], [20, 0, 30, 10]], [3.0, 1.0])


def test_nms_then_regress_keeps_what_the_proposal_nms_kept():
    # The official order: NMS on A, B, C (IoU 0.25: all kept), then B regressed onto A; no second NMS.
    assert three_box_detections("nms_then_regress") == (
        [[0, 0, 10, 10], [0, 0, 10, 10], [20, 0, 30, 10]], [3.0, 2.0, 1.0])


def test_the_per_class_cap_acts_before_regression_in_the_official_order():
    # Top 2: A and B by their proposal boxes (then B moves onto A); regressing first keeps A and C.
    assert three_box_detections("nms_then_regress", max_per_class=2)[1] == [3.0, 2.0]
    assert three_box_detections("regress_then_nms", max_per_class=2)[1] == [3.0, 1.0]


# -- 4. scale choice -------------------------------------------------------------------------

SCALES = [480, 576, 688, 874, 1200]


def chosen_scales(sides, rule, canonical, min_side=500):
    boxes = torch.tensor([[0, 0, s, s] for s in sides], dtype=torch.float64)
    factors = [s / min_side for s in SCALES]
    return [SCALES[i] for i in select_scales(boxes, factors, canonical, rule, min_side).tolist()]


def test_official_208_rule_on_hand_worked_windows():
    # Shorter side 500; square windows (our width 105 = MATLAB's x2 - x1 + 1 for [1, 105]):
    # 100: round(208 * 500 / 100) = 1040 -> |874-1040| = 166 > |1200-1040| = 160 -> 1200
    # 105: round(990.48) = 990 -> 116 < 210 -> 874
    # 150: round(693.33) = 693 -> 688 (5)
    # 300: round(346.67) = 347 -> 480 (133)
    assert chosen_scales([100, 105, 150, 300], "side", 208) == [1200, 874, 688, 480]


def test_the_area_rule_picks_another_scale_for_the_105_px_window():
    # Area rule, 224^2: at 874 the side is 105 * 1.748 = 183.5 (|183.5^2 - 224^2| = 16498),
    # at 1200 it is 252 (|63504 - 50176| = 13328) -> 1200, where the official rule takes 874.
    assert chosen_scales([105], "area", 224) == [1200]


def test_the_side_and_area_rules_switch_at_different_points():
    # Same target 224: a 107 px window's ideal scale is round(224 * 500 / 107) = 1047, past the
    # midpoint (874 + 1200) / 2 = 1037 -> "side" takes 1200; the area rule switches at
    # sqrt((874^2 + 1200^2) / 2) = 1049.7 -> 874.
    assert chosen_scales([107], "side", 224) == [1200]
    assert chosen_scales([107], "area", 224) == [874]


def test_an_exact_midpoint_goes_to_the_smaller_scale_as_in_matlab():
    # Ideal side exactly 632 = (576 + 688) / 2: MATLAB's min takes the first (smaller) scale.
    boxes = torch.tensor([[0, 0, 104000 / 632, 104000 / 632]], dtype=torch.float64)
    assert select_scales(boxes, [s / 500 for s in SCALES], 208, "side", 500).tolist() == [1]


def test_side_rule_needs_the_shorter_side():
    with pytest.raises(ValueError, match="shorter side"):
        select_scales(torch.zeros(1, 4), [1.0, 2.0], 208, "side")


# -- 5. cell margin ----------------------------------------------------------------------------

def test_zf5_margin_7_16_on_a_mapping_example():
    # ZF-5 as here (padded floor(k/2)): cell j centred at 16 j + 0.5. Window [17, 96] on each axis.
    # Margin 1/2 (the cells whose centres lie inside): the edges move in by 8 px to 25 and 88,
    # nearest centres 32.5 (cell 2) and 80.5 (cell 5): cells [2, 6).
    # Margin 7/16 (official offset 6.5 px): in by 7 px to 24 and 89: nearest centres 16.5 (cell 1;
    # 7.5 px away against 8.5 to 32.5) and 96.5 (cell 6; 7.5 against 8.5): cells [1, 7).
    grid = FeatureGrid(stride=16, offset=0.0)
    box = torch.tensor([[17.0, 17.0, 96.0, 96.0]])
    assert map_windows_to_features(box, grid, 40, 40, 0.5).tolist() == [[2, 2, 6, 6]]
    assert map_windows_to_features(box, grid, 40, 40, 7 / 16).tolist() == [[1, 1, 7, 7]]


# -- 6. window scaling -------------------------------------------------------------------------

def official_scaled(box_1based, scale, min_side):
    """spp_features_convX_to_poolX.m:45 on a 1-based inclusive pixel box (l, t, r, b)."""
    return [(b - 1) * (scale - 1) / (min_side - 1) + 1 for b in box_1based]


@pytest.mark.parametrize("ours, official", [
    ([0, 0, 500, 500], [1, 1, 500, 500]),        # the whole image
    ([499, 0, 500, 1], [500, 1, 500, 1]),        # the last column's first pixel
    ([100, 50, 300, 250], [101, 51, 300, 250]),  # a window inside
])
def test_corner_scaling_is_the_official_formula_in_0_based_coordinates(ours, official):
    # Our [X1, X2) is MATLAB's pixels [X1 + 1, X2]: the official result l', r' is ours X1' = l' - 1, X2' = r'.
    scale, min_side = 1200, 500
    l, t, r, b = official_scaled(official, scale, min_side)
    got = scale_windows(torch.tensor([ours], dtype=torch.float64), scale / min_side, "corner", min_side)
    torch.testing.assert_close(got, torch.tensor([[l - 1, t - 1, r, b]], dtype=torch.float64))


def test_corner_and_plain_scaling_differ_by_up_to_factor_minus_one():
    # The last column at 500 -> 1200: plain puts its left edge at 499 * 2.4 = 1197.6, corner at 1199.
    box = torch.tensor([[499.0, 0.0, 500.0, 1.0]], dtype=torch.float64)
    plain = scale_windows(box, 2.4, "plain")
    corner = scale_windows(box, 2.4, "corner", 500)
    torch.testing.assert_close(plain, torch.tensor([[1197.6, 0.0, 1200.0, 2.4]], dtype=torch.float64))
    assert float((corner - plain).abs().max()) == pytest.approx(1.4)


# -- 8. SVM negatives ------------------------------------------------------------------------

def test_svm_negative_iou_boundary_at_0_3():
    # gt [0, 0, 10, 10]; window [0, 0, 3, 10]: IoU 30 / 100 = 0.3 exactly; [0, 0, 2, 10]: 0.2.
    gt, labels = np.array([[0, 0, 10, 10]], np.float32), np.array([0])
    windows = np.array([[0, 0, 3, 10], [0, 0, 2, 10]], np.float32)
    assert find_negative_candidates(windows, gt, labels, 1, 0.3)[:, 0].tolist() == [True, True]
    assert find_negative_candidates(windows, gt, labels, 1, 0.3, strict=True)[:, 0].tolist() == [False, True]


def dedup_image() -> TrainImage:
    """Windows 0 and 1 pool the same vector (the same cells); window 2 overlaps window 0 by
    IoU 0.9 with another vector; window 3 is apart. The gt box is far from all (class 0)."""
    feats = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    boxes = np.array([[0, 0, 100, 100], [1, 1, 100, 100], [0, 0, 100, 90], [300, 300, 400, 400]], np.float32)
    return TrainImage(image_id="im", features=feats, boxes=boxes, gt_features=np.array([[0, 0, 5]], np.float32),
                      gt_boxes=np.array([[500, 500, 600, 600]], np.float32), gt_labels=np.array([0]),
                      gt_difficult=np.zeros(1, bool))


@pytest.mark.parametrize("dedup, kept", [("nms", [0, 3]), ("identical", [0, 2, 3])])
def test_negative_dedup_rule(dedup, kept):
    # nms at 0.7: windows 1 (IoU 0.98) and 2 (0.9) overlap window 0 -> 0 and 3 stay.
    # identical: only window 1 repeats window 0's vector -> 0, 2 and 3 stay. (The gt box, index 4,
    # is a candidate for no class: IoU 1 with itself.)
    cfg = SVMConfig(initial_negatives=100, neg_dedup=dedup, evict_threshold=-1e9)
    trainer = HardNegativeTrainer(1, cfg, seed=0)
    trainer.collect([dedup_image()])
    keys = sorted(trainer.caches[0].arrays()[1].tolist())
    assert keys == kept


def test_first_of_identical_rows():
    rows = np.array([[1, 2], [3, 4], [1, 2], [3, 4], [5, 6]], np.float32)
    assert first_of_identical(rows).tolist() == [0, 1, 4]
    assert first_of_identical(np.zeros((0, 2), np.float32)).tolist() == []


# -- the paper configs and the test-time screens -----------------------------------------------

@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_configs_select_every_official_rule(name):
    cfg = load_detector_config(CONFIGS / name)
    assert cfg.test.order == "nms_then_regress"
    assert cfg.data.flip and cfg.data.flip_stages == ["finetune"]
    assert cfg.data.difficult_stages == ["finetune", "svm", "bbox"]
    rules = window_rules(cfg)
    assert (rules.scale_rule, rules.canonical_window, rules.margin, rules.scaling) == ("side", 208, 7 / 16, "corner")
    assert (cfg.finetune.lr, cfg.finetune.iterations, cfg.finetune.milestones()) == (0.001, 200000, [30000, 60000])
    assert cfg.svm.neg_iou_strict and cfg.svm.neg_dedup == "identical"
    assert cfg.bbox.norm_windows == "random"


def test_defaults_keep_todays_rules():
    cfg = load_detector_config(None, [])
    assert cfg.test.order == "regress_then_nms" and cfg.data.difficult_stages == []
    assert cfg.data.flip_stages == ["finetune", "svm", "bbox"]
    assert window_rules(cfg) == dataclasses.replace(window_rules(cfg), scale_rule="area", margin=0.5,
                                                    scaling="plain", canonical_window=224)
    assert not cfg.svm.neg_iou_strict and cfg.svm.neg_dedup == "nms" and cfg.bbox.norm_windows == "regression"
    assert cfg.finetune.milestones() == [int(cfg.finetune.iterations * 0.8)]


def test_window_rules_can_be_screened_at_test_time_but_not_the_pyramid():
    cfg = load_detector_config(None, [])
    screened = with_test_overrides(cfg, ["pool.window_margin=0.4375", "pool.window_scaling=corner",
                                         "test.order=nms_then_regress", "features.scale_rule=side"])
    assert (screened.pool.window_margin, screened.pool.window_scaling) == (0.4375, "corner")
    with pytest.raises(ConfigError, match="pool.levels cannot change at test time"):
        with_test_overrides(cfg, ["pool.levels=[2,1]"])


@pytest.mark.parametrize("override, message", [
    ("test.order=regress_first", "test.order 'regress_first' must be one of"),
    ("data.flip_stages=[svm,rpn]", "data.flip_stages: 'rpn' not one of finetune, svm, bbox"),
    ("features.scale_rule=nearest", "features.scale_rule 'nearest' must be one of area, side"),
    ("pool.window_scaling=bilinear", "pool.window_scaling 'bilinear' must be one of plain, corner"),
    ("svm.neg_dedup=cells", "svm.neg_dedup 'cells' must be one of nms, identical"),
    ("bbox.norm_windows=all", "bbox.norm_windows 'all' must be one of regression, random"),
    ("svm.norm_windows=regression", "svm.norm_windows 'regression' must be one of all, random"),
    ("finetune.lr_steps=[60000,30000]", "finetune.lr_steps must be increasing"),
    ("finetune.lr_schedule=poly", "finetune.lr_schedule 'poly' must be one of step, cosine"),
    ("finetune.warmup_iterations=5000", "finetune.warmup_iterations 5000 must be in .0, finetune.iterations 2000."),
])
def test_bad_rule_values_are_named(override, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_detector_config(None, [override])


def test_the_paper_config_trains_and_tests_with_every_official_rule(tmp_path):
    """voc2007_zf5_5scale.yaml on a tiny set: every official rule at once, through training
    (mirrors for fine-tuning only, difficult objects in, strict negatives, identical-vector dedup,
    random-window norm, lr steps) and testing (side scale rule, corner scaling, 7/16, NMS first)."""
    from detector.data import make_synthetic_voc
    from detector.model import load_trained
    from detector.inference.split_test import EvaluationOptions, run_model_test
    from detector.training.train import train
    data = make_synthetic_voc(tmp_path / "d", num_train=3, num_test=2, seed=3)  # 2 difficult objects
    cfg = load_detector_config(CONFIGS / "voc2007_zf5_5scale.yaml", [
        f"data.root={data}", "data.class_names=[]", f"workdir={tmp_path / 'run'}", "backbone.name=tiny",
        "features.scales=[96,128]", "proposals.max_windows=30", "proposals.workers=1", "finetune.hidden=32",
        "finetune.iterations=12", "finetune.lr_steps=[4,8]", "finetune.batch_size=32", "finetune.val_every=6",
        "svm.initial_negatives=20"])
    result = train(cfg, progress=False)
    assert result.stats["finetune"]["iterations"] == 12
    # The streamed fine-tuning draws from the 3 images and their mirrors; the streamed
    # regression (every window) sees the 3 originals only.
    assert result.stats["finetune"]["sampler"] == "stream" and result.stats["finetune"]["eligible_images"] == 6
    assert result.stats["bbox"]["eligible_images"] == 3
    # The official snapshot choice: held-out error every val_every iterations on VOC's test
    # split (here every 6 of 12), the best snapshot kept.
    validation = result.stats["finetune"]["validation"]
    assert validation["split"] == "test" and [h["iter"] for h in validation["history"]] == [5, 11]
    assert validation["best_iteration"] in (5, 11)
    model = load_trained(result.model_path)
    assert model.detector.test.order == "nms_then_regress" and model.detector.features.rules.scaling == "corner"
    outcome = run_model_test(model, EvaluationOptions("test", tmp_path / "test", "voc07", progress=False,
                                                      pipeline=False))
    assert 0.0 <= outcome.result.mAP <= 1.0 and outcome.without_bbox is not None


def test_a_class_with_only_difficult_objects_is_empty_only_for_the_stages_that_leave_them_out():
    from types import SimpleNamespace
    from detector.training.context import classes_without_training_objects

    record = SimpleNamespace(boxes=np.array([[0, 0, 9, 9], [5, 5, 20, 20]], np.float32),
                             labels=np.array([0, 1]), difficult=np.array([False, True]))
    stages = ["finetune", "svm", "bbox"]
    assert classes_without_training_objects([record], ["cat", "dog"], stages) == {"dog": stages}
    assert classes_without_training_objects([record], ["cat", "dog"], stages, ["svm"]) == {"dog": ["finetune", "bbox"]}
    assert classes_without_training_objects([record], ["cat", "dog"], stages, stages) == {}
