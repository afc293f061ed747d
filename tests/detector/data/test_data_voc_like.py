"""The VOC 2007-shaped generator: VOC's image sizes, 20 classes, ~2.4 objects per image."""
from __future__ import annotations

import numpy as np

from detector.data import VOCDataset
from detector.data.voc_like import IMAGE_SIZES, VOC_LIKE_CLASSES, make_voc_like


def test_voc_like_set_has_voc_2007_shape(tmp_path):
    root = make_voc_like(tmp_path / "a", num_train=120, num_test=10, seed=1)
    ds = VOCDataset(root, "trainval", class_names=VOC_LIKE_CLASSES)
    records = list(ds)
    assert len(records) == 120 and len(VOC_LIKE_CLASSES) == 20
    assert {(r.width, r.height) for r in records} <= set(IMAGE_SIZES)
    counts = np.array([len(r.boxes) for r in records])
    assert counts.min() >= 1 and 1.9 < counts.mean() < 3.0
    several_classes = np.mean([len(set(r.labels.tolist())) > 1 for r in records])
    assert 0.15 < several_classes < 0.45
    for r in records:
        assert (r.boxes[:, 0] >= 0).all() and (r.boxes[:, 2] < r.width).all()
        assert (r.boxes[:, 2] > r.boxes[:, 0]).all() and (r.boxes[:, 3] > r.boxes[:, 1]).all()
    assert len(set(np.concatenate([r.labels for r in records]).tolist())) >= 15
    assert len(list(VOCDataset(root, "test", class_names=VOC_LIKE_CLASSES))) == 10


def test_voc_like_is_a_function_of_the_seed_and_grows_in_place(tmp_path):
    a = make_voc_like(tmp_path / "a", num_train=6, num_test=0, seed=2)
    b = make_voc_like(tmp_path / "b", num_train=4, num_test=0, seed=2)
    b = make_voc_like(tmp_path / "b", num_train=6, num_test=0, seed=2)  # grown: first 4 kept
    for k in range(6):
        name = f"{k:06d}"
        assert (a / "JPEGImages" / f"{name}.jpg").read_bytes() == (b / "JPEGImages" / f"{name}.jpg").read_bytes()
        assert (a / "Annotations" / f"{name}.xml").read_text() == (b / "Annotations" / f"{name}.xml").read_text()
    other = make_voc_like(tmp_path / "c", num_train=1, num_test=0, seed=3)
    assert (other / "JPEGImages/000000.jpg").read_bytes() != (a / "JPEGImages/000000.jpg").read_bytes()
