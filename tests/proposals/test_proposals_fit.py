"""proposals.fit (recall of a split's windows on its own ground truth) and the dense grid."""
from __future__ import annotations

import dataclasses
import logging
import json
from pathlib import Path

import numpy as np
import pytest

from detector.records import ImageRecord
from proposals import ProposalConfig, evaluate_proposals, propose_with_config
from proposals.dense import _window_shapes, contrast_scores, dense_windows, feature_maps, integral_maps
from proposals.fit import fit_warning, format_fit, measure_fit
from proposals.store import cache_params


def record(image_id, boxes, labels, difficult=None):
    boxes = np.asarray(boxes, np.float32)
    return ImageRecord(image_id, Path(f"{image_id}.jpg"), 100, 100, boxes, np.asarray(labels, np.int64),
                       np.zeros(len(boxes), bool) if difficult is None else np.asarray(difficult, bool))


def test_measure_fit_counts_by_hand():
    # a: box 0 matched exactly (IoU 1); box 1 [0,0,10,10] vs window [0,0,10,16]: IoU 10*10/160 = 0.625.
    # b: box [50,50,60,60] vs window [50,50,60,70]: IoU 0.5; the difficult box is left out.
    recs = [record("a", [[20, 20, 40, 40], [0, 0, 10, 10]], [0, 1]),
            record("b", [[50, 50, 60, 60], [0, 0, 5, 5]], [1, 0], difficult=[False, True])]
    windows = {"a": np.array([[20, 20, 40, 40], [0, 0, 10, 16]], np.float32),
               "b": np.array([[50, 50, 60, 70]], np.float32)}
    fit = measure_fit(recs, windows.__getitem__, ("cat", "dog"), "trainval", min_size=10)
    assert fit.objects == 3 and fit.images == 2 and fit.windows_per_image == 1.5
    assert fit.recall_50 == 1.0 and fit.recall_70 == pytest.approx(1 / 3)
    assert fit.per_class["cat"] == dataclasses.replace(fit.per_class["cat"], objects=1, recall_50=1.0,
                                                        recall_70=1.0)
    assert (fit.per_class["dog"].objects, fit.per_class["dog"].recall_70) == (2, 0.0)
    assert fit.small_objects == 2  # the two 10 px boxes are under 1.5 x 10 px; the 20 px one is not
    # The same recall as the proposal report's definition.
    report = evaluate_proposals(recs, windows, ("cat", "dog"))
    assert (report.recall_at(0.5), report.recall_at(0.7)) == (fit.recall_50, fit.recall_70)


def test_fit_warning_below_min_recall_names_the_class_and_settings():
    recs = [record("a", [[0, 0, 10, 10], [40, 40, 90, 90]], [0, 1])]
    fit = measure_fit(recs, lambda _: np.array([[40, 40, 90, 90]], np.float32), ("pit", "patch"), "train",
                      min_size=20)
    assert fit.recall_50 == 0.5
    text = fit_warning(fit, ProposalConfig())
    assert "50.0%" in text and "'pit'" in text and "proposals.method=union" in text
    assert "proposals.min_size=6" in text  # half the objects are small for min_size 20
    assert fit_warning(fit, ProposalConfig(min_recall=0.5)) is None
    assert "pit" in format_fit(fit) and "0.500 at IoU 0.5" in format_fit(fit)


def test_dense_fields_key_only_the_methods_that_read_them():
    base, other = ProposalConfig(), ProposalConfig(dense_stride=0.3, min_recall=0.5)
    assert cache_params(base) == cache_params(other)  # existing caches and stage keys stay valid
    assert "dense_stride" not in cache_params(base)
    union = dataclasses.replace(base, method="union")
    assert cache_params(union) != cache_params(dataclasses.replace(union, dense_stride=0.3))
    assert cache_params(union) == cache_params(dataclasses.replace(union, min_recall=0.5))


def brute_contrast(maps, box):
    """Centre-surround contrast of one integer box, from the pixels."""
    x0, y0, x1, y1 = (int(v) for v in box)
    w, h = x1 - x0, y1 - y0
    H, W = maps[0].shape
    ox0, oy0 = max(0, round(x0 - w / 4)), max(0, round(y0 - h / 4))
    ox1, oy1 = min(W, round(x1 + w / 4)), min(H, round(y1 + h / 4))
    total = 0.0
    for m in maps:
        inner = m[y0:y1, x0:x1]
        ring_mask = np.zeros(m.shape, bool)
        ring_mask[oy0:oy1, ox0:ox1] = True
        ring_mask[y0:y1, x0:x1] = False
        ring = m[ring_mask]
        total += (abs(inner.mean() - ring.mean()) + abs(inner.std() - ring.std())) / (m.std() + 1e-6)
    return total


def test_contrast_scores_match_a_brute_force_reference():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
    maps = feature_maps(image)
    boxes = np.array([[8, 8, 24, 20], [30, 12, 70, 52], [40, 4, 48, 36]], np.float32)
    got = contrast_scores(integral_maps(maps), boxes)
    want = [brute_contrast(maps, b) for b in boxes]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_dense_windows_rank_a_low_contrast_square_first_and_cover_every_shape():
    rng = np.random.default_rng(1)
    image = np.clip(rng.normal(120, 10, (120, 160)), 0, 255)
    image[40:72, 90:122] += 30  # a faint 32 px square
    image = np.repeat(image.astype(np.uint8)[:, :, None], 3, axis=2)
    windows = dense_windows(image, min_size=10, max_windows=400, scales_per_octave=3,
                            aspects=(0.5, 1.0, 2.0))
    assert 0 < len(windows) <= 400 and windows.dtype == np.float32
    assert (windows[:, :2] >= 0).all() and (windows[:, 2] <= 160).all() and (windows[:, 3] <= 120).all()
    np.testing.assert_array_equal(windows, dense_windows(image, min_size=10, max_windows=400,
                                                         scales_per_octave=3, aspects=(0.5, 1.0, 2.0)))
    # The first windows are one per shape (the best of each), so every size and aspect survives any cap.
    shapes = _window_shapes(160, 120, 10, 3, (0.5, 1.0, 2.0))
    first = windows[:len(shapes)]
    assert sorted(map(tuple, np.round(first[:, 2:] - first[:, :2], 3))) == sorted(
        tuple(np.round(np.array(s, np.float32), 3)) for s in shapes)
    report = evaluate_proposals([ImageRecord("s", Path("s.png"), 160, 120, np.array([[90, 40, 122, 72]], np.float32),
                                             np.zeros(1, np.int64), np.zeros(1, bool))],
                                {"s": first}, ("square",))
    assert report.recall_at(0.7) == 1.0  # the square's own shape ranks a window on it first


def test_union_keeps_the_search_windows_first_then_fills_the_cap():
    from detector.data.synthetic import draw_synthetic_image

    image, _ = draw_synthetic_image(np.random.default_rng(2), 160, 120, ("circle", "square"))
    search = propose_with_config(image, ProposalConfig(max_windows=300))
    union = propose_with_config(image, ProposalConfig(method="union", max_windows=300))
    np.testing.assert_array_equal(union[:len(search)], search)
    assert len(union) == 300 > len(search)


@pytest.fixture(scope="module")
def defect_data(tmp_path_factory):
    from detector.data.defects import make_defect_voc
    return make_defect_voc(tmp_path_factory.mktemp("defects") / "data", num_train=12, num_test=2, seed=0)


def test_default_search_misses_the_generated_defects_and_the_dense_grid_reaches_them(defect_data):
    from detector.data import load_dataset
    from detector.images import read_image

    records = list(load_dataset(defect_data, "trainval"))
    images = {r.image_id: read_image(r.path) for r in records}

    def recall(cfg):
        windows = {i: propose_with_config(im, cfg) for i, im in images.items()}
        return evaluate_proposals(records, windows, ("scratch", "patch", "pits")).recall_at(0.5)

    default = recall(ProposalConfig())
    dense = recall(ProposalConfig(method="dense", min_size=6))
    assert default < 0.5  # 0.13 on 120 trainval images (docs/proposals.md)
    assert dense > 0.8 and dense > default + 0.4


TINY = ["backbone.name=tiny", "features.scales=[192]", "finetune.hidden=64", "finetune.iterations=20",
        "finetune.bank_bg_per_image=16", "proposals.max_windows=60", "proposals.workers=1",
        "svm.initial_negatives=30", "svm.mining_rounds=1", "bbox.enabled=false", "data.flip=false"]


@pytest.mark.parametrize("which", ["defects", "shapes"])
def test_training_reports_proposal_recall_and_warns_only_where_it_is_low(which, defect_data, voc_data,
                                                                         tmp_path, caplog, capsys):
    from detector.commands import main

    data = defect_data if which == "defects" else voc_data
    with caplog.at_level(logging.INFO):
        code = main(["train", "--no-progress", f"data.root={data}", f"workdir={tmp_path / 'run'}", *TINY])
    assert code == 0
    report = json.loads((tmp_path / "run" / "train_report.json").read_text())["proposal_recall"]
    summary = json.loads(capsys.readouterr().out)["proposal_recall"]
    assert summary["iou_0.5"] == report["recall_50"]
    assert set(report["per_class"]) == ({"scratch", "patch", "pits"} if which == "defects"
                                        else {"circle", "square", "triangle"})
    warned = [r.getMessage() for r in caplog.records
              if r.levelno == logging.WARNING and "proposals reach only" in r.getMessage()]
    assert any("proposal recall on the trainval split" in r.getMessage() for r in caplog.records)
    if which == "defects":
        assert report["recall_50"] < 0.5 and len(warned) == 1 and "proposals.method=union" in warned[0]
    else:
        assert report["recall_50"] >= 0.9 and not warned


def test_stats_reports_recall_on_request(defect_data, tmp_path, capsys):
    from detector.commands import main

    code = main(["stats", "--data", str(defect_data), "--split", "trainval", "--recall",
                 "--cache", str(tmp_path / "cache")])
    out = capsys.readouterr().out
    assert code == 0
    assert "proposal recall on the trainval split" in out and "warning: the proposals reach only" in out
