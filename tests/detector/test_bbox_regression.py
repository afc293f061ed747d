"""Tests for detector/training/bbox_regression.py: ridge box regressors."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from detector.training.bbox_regression import (BoxRegressionDataError, BoxRegressors, fit_ridge,
                                      train_box_regressors)
from detector.boxes import as_box_tensor, decode_boxes, encode_boxes
from detector.config import BBoxConfig

D = 6
SMALL = BBoxConfig(ridge_lambda=1e-8)


def random_windows(rng: np.random.Generator, n: int) -> np.ndarray:
    xy = rng.uniform(0, 100, (n, 2))
    wh = rng.uniform(20, 80, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


def linear_problem(n: int = 300, seed: int = 0):
    """Windows whose true deltas are an affine function of their features."""
    rng = np.random.default_rng(seed)
    w_true = rng.normal(0, 0.05, (D, 4))
    b_true = np.array([0.02, -0.03, 0.05, -0.01])
    x = (rng.normal(0, 1, (n, D)) + 2).astype(np.float32)
    deltas = x.astype(np.float64) @ w_true + b_true
    boxes = random_windows(rng, n)
    gt = decode_boxes(as_box_tensor(boxes), torch.from_numpy(deltas).float()).numpy()
    return x, boxes, gt, deltas, (w_true, b_true)


def test_recovers_linear_deltas_and_boxes():
    x, boxes, gt, deltas, (w_true, b_true) = linear_problem()
    labels = np.zeros(len(x), np.int64)
    reg = train_box_regressors(x, boxes, gt, labels, np.ones(len(x)), 1, SMALL)
    np.testing.assert_allclose(reg.predict(x, labels), deltas, atol=1e-4)
    np.testing.assert_allclose(reg.apply(x, boxes, labels), gt, atol=1e-2)
    # Held-out windows follow the same law.
    x2 = linear_problem(50, seed=1)[0]
    truth = x2.astype(np.float64) @ w_true + b_true
    np.testing.assert_allclose(reg.predict(x2, np.zeros(50, np.int64)), truth, atol=1e-4)
    # Stored normalisation: the per-class mean/std of the encoded targets.
    enc = encode_boxes(as_box_tensor(boxes), as_box_tensor(gt)).numpy()
    np.testing.assert_allclose(reg.target_mean[0], enc.mean(0), atol=1e-5)
    np.testing.assert_allclose(reg.target_std[0], enc.std(0), rtol=1e-4)


def test_feature_scale_is_mean_norm_20():
    x, boxes, gt, _, _ = linear_problem(40)
    reg = train_box_regressors(x, boxes, gt, np.zeros(40, np.int64), np.ones(40), 1, BBoxConfig())
    assert np.linalg.norm(x * reg.feature_scale, axis=1).mean() == pytest.approx(20, rel=1e-5)
    given = train_box_regressors(x, boxes, gt, np.zeros(40, np.int64), np.ones(40), 1,
                                 BBoxConfig(), feature_scale=0.5)
    assert given.feature_scale == 0.5


def test_only_windows_with_iou_at_least_min_iou_train():
    x, boxes, gt, deltas, _ = linear_problem(200)
    rng = np.random.default_rng(5)
    overlaps = np.where(np.arange(200) < 150, 0.6, 0.59).astype(np.float32)
    # Windows below 0.6 get wildly wrong gt boxes: any use of them spoils the fit.
    gt = gt.copy()
    gt[150:] = random_windows(rng, 50)
    labels = np.zeros(200, np.int64)
    reg = train_box_regressors(x, boxes, gt, labels, overlaps, 1, SMALL)
    assert reg.num_samples.tolist() == [150]
    np.testing.assert_allclose(reg.predict(x, labels), deltas, atol=1e-4)
    with_all = train_box_regressors(x, boxes, gt, labels, overlaps, 1,
                                    BBoxConfig(min_iou=0.5, ridge_lambda=1e-8))
    assert with_all.num_samples.tolist() == [200]
    assert np.abs(with_all.predict(x, labels) - deltas).max() > 0.05


def test_class_without_samples_keeps_boxes(caplog):
    x, boxes, gt, _, _ = linear_problem(60)
    labels = np.where(np.arange(60) % 2, 0, 1)
    with caplog.at_level(logging.WARNING, logger="detector.training.bbox_regression"):
        reg = train_box_regressors(x, boxes, gt, labels, np.ones(60), 3, SMALL)
    assert "class 2 has no window" in caplog.text
    assert reg.num_samples.tolist() == [30, 30, 0]
    two = np.full(60, 2)
    np.testing.assert_array_equal(reg.predict(x, two), np.zeros((60, 4), np.float32))
    np.testing.assert_allclose(reg.apply(x, boxes, two), boxes, atol=1e-4)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="detector.training.bbox_regression"):
        train_box_regressors(x, boxes, gt, labels, np.ones(60), 3, SMALL, class_names=["a", "b", "circle"])
    assert "class 'circle' (2) has no window" in caplog.text
    assert "{'a': 30, 'b': 30, 'circle': 0}" in caplog.text
    # A one-window class: its deltas are reproduced (zero spread, std left at 1).
    reg1 = train_box_regressors(x[:1], boxes[:1], gt[:1], np.zeros(1, np.int64), np.ones(1), 1,
                                SMALL)
    np.testing.assert_allclose(reg1.apply(x[:1], boxes[:1], np.zeros(1, np.int64)), gt[:1],
                               atol=1e-3)


def test_state_dict_round_trip(tmp_path):
    x, boxes, gt, _, _ = linear_problem(50)
    labels = np.arange(50) % 2
    reg = train_box_regressors(x, boxes, gt, labels, np.ones(50), 2, BBoxConfig())
    torch.save(reg.to_state_dict(), tmp_path / "bbox.pt")
    loaded = BoxRegressors.from_state_dict(torch.load(tmp_path / "bbox.pt", weights_only=True))
    for name in ("weights", "bias", "target_mean", "target_std", "num_samples"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(reg, name))
    assert loaded.feature_scale == reg.feature_scale
    np.testing.assert_array_equal(loaded.apply(x, boxes, labels), reg.apply(x, boxes, labels))
    with pytest.raises(ValueError, match="target_std"):
        BoxRegressors.from_state_dict({k: v for k, v in reg.to_state_dict().items()
                                       if k != "target_std"})


@pytest.mark.parametrize("n", [40, 4])  # primal (n >= D) and dual (n < D) solves
def test_fit_ridge_matches_brute_force(n):
    rng = np.random.default_rng(n)
    x = rng.normal(1, 1, (n, D)).astype(np.float32)
    t = rng.normal(0, 1, (n, 3))
    lam = 0.7
    w, b = fit_ridge(x, t, lam)
    # Brute force: least squares on [X 1; sqrt(lam) I 0] (bias unpenalised).
    a = np.block([[x.astype(np.float64), np.ones((n, 1))],
                  [np.sqrt(lam) * np.eye(D), np.zeros((D, 1))]])
    rhs = np.concatenate([t, np.zeros((D, 3))])
    ref = np.linalg.lstsq(a, rhs, rcond=None)[0]
    np.testing.assert_allclose(w, ref[:D], atol=1e-8)
    np.testing.assert_allclose(b, ref[D], atol=1e-8)


def test_bad_inputs_raise():
    x, boxes, gt, _, _ = linear_problem(10)
    ones = np.ones(10)
    with pytest.raises(BoxRegressionDataError, match="labels outside"):
        train_box_regressors(x, boxes, gt, np.full(10, 3), ones, 2, BBoxConfig())
    with pytest.raises(BoxRegressionDataError, match="gt_boxes"):
        train_box_regressors(x, boxes, gt[:5], np.zeros(10, np.int64), ones, 2, BBoxConfig())
    flat = boxes.copy()
    flat[0, 2] = flat[0, 0]
    with pytest.raises(BoxRegressionDataError, match="width/height"):
        train_box_regressors(x, flat, gt, np.zeros(10, np.int64), ones, 2, BBoxConfig())
    with pytest.raises(ValueError, match="ridge_lambda"):
        train_box_regressors(x, boxes, gt, np.zeros(10, np.int64), ones, 2,
                             BBoxConfig(ridge_lambda=0))
    reg = train_box_regressors(x, boxes, gt, np.zeros(10, np.int64), ones, 2, BBoxConfig())
    with pytest.raises(ValueError, match="labels outside"):
        reg.predict(x, np.full(10, 2))


def streamed_problem(seed: int = 3):
    """Three classes over 9 images: class 0 with more windows than feature dimensions (the
    in-memory solver's primal path), class 1 with fewer (its dual path), class 2 with none."""
    rng = np.random.default_rng(seed)
    x, boxes, gt, _, _ = linear_problem(80, seed)
    x = x * rng.uniform(0.5, 3.0, D).astype(np.float32) + 40  # far from the origin: centring matters
    labels = np.where(np.arange(80) < 76, 0, 1).astype(np.int64)
    return x, boxes, gt, labels, rng.permutation(80)


def streamed_images(x, boxes, gt, labels, order, num_images=9):
    from detector.training.bbox_stream import RegressionWindows

    calls = []

    def images(classes):
        calls.append(classes)
        for i, rows in enumerate(np.array_split(order, num_images)):
            keep = rows if classes is None else rows[np.isin(labels[rows], classes)]
            yield RegressionWindows(image=i, features=x[keep], boxes=boxes[keep], gt_boxes=gt[keep],
                                    labels=labels[keep], eligible=len(rows))
    return images, calls


@pytest.mark.parametrize("buffer_rows", [512, 7])  # rows gathered per Gram update: one at the end; many
@pytest.mark.parametrize("max_mb", [4000.0, 1e-6])  # all classes in one pass; one class a pass
def test_streamed_normal_equations_give_the_in_memory_solution(max_mb, buffer_rows, monkeypatch):
    from detector.training import bbox_stream
    from detector.training.bbox_stream import train_box_regressors_streamed

    monkeypatch.setattr(bbox_stream, "BUFFER_ROWS", buffer_rows)

    x, boxes, gt, labels, order = streamed_problem()
    cfg = BBoxConfig(ridge_lambda=0.5, normal_equations_max_mb=max_mb)
    memory = train_box_regressors(x, boxes, gt, labels, np.ones(len(x)), 3, cfg)
    images, calls = streamed_images(x, boxes, gt, labels, order)
    streamed, use = train_box_regressors_streamed(images, 3, D, cfg)
    assert streamed.feature_scale == pytest.approx(memory.feature_scale, rel=1e-9)
    np.testing.assert_array_equal(streamed.num_samples, [76, 4, 0])
    for name in ("weights", "bias", "target_mean", "target_std"):
        np.testing.assert_allclose(getattr(streamed, name), getattr(memory, name), rtol=1e-4, atol=1e-6,
                                   err_msg=name)
    assert (use.distinct_windows, use.eligible_windows, use.images) == (80, 80, 9)
    assert calls == ([None] if max_mb > 1 else [None, [1], [2]])  # a pass per group of classes


@pytest.mark.parametrize("buffer_rows", [1, 5, 64])
def test_normal_equations_gram_is_the_centred_products_whatever_the_buffer(buffer_rows, monkeypatch):
    """Rows come in chunks that end before, at and across the buffer's end; the Gram
    matrix (upper triangle by syrk, both triangles on the way out) is X_c^T X_c."""
    from detector.training import bbox_stream

    monkeypatch.setattr(bbox_stream, "BUFFER_ROWS", buffer_rows)
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 2.0, (37, 6))
    eq = bbox_stream.NormalEquations(6)
    for rows in np.split(np.arange(37), [4, 5, 15, 16, 30]):
        eq.add(x[rows], rng.normal(size=(len(rows), 4)))
    xc = x - x[:4].mean(axis=0)  # sums are about the first chunk's mean
    np.testing.assert_allclose(eq.full_gram(), xc.T @ xc, rtol=1e-12)
    np.testing.assert_allclose(eq.sum, xc.sum(axis=0), rtol=1e-12)
    assert eq.count == 37
