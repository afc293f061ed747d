"""Tests for detector/data/synthetic.py: determinism, tight boxes, VOC layout."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from detector.data import VOCDataset, make_synthetic_voc
from detector.data.synthetic import SHAPE_COLOURS, SIZE_RANGE, _shape_mask
from detector.images import read_image

# Shape pixels have max-min channel >= ~110 after jitter; the grey background < ~50.
SATURATION_THRESHOLD = 90


def _saturated(image: np.ndarray) -> np.ndarray:
    image = image.astype(np.int16)
    return (image.max(axis=2) - image.min(axis=2)) > SATURATION_THRESHOLD


def _all_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_files_other_seed_differs(tmp_path):
    a = make_synthetic_voc(tmp_path / "a", num_train=6, num_test=3, seed=3)
    b = make_synthetic_voc(tmp_path / "b", num_train=6, num_test=3, seed=3)
    c = make_synthetic_voc(tmp_path / "c", num_train=6, num_test=3, seed=4)
    files_a, files_b, files_c = _all_bytes(a), _all_bytes(b), _all_bytes(c)
    assert files_a == files_b
    assert len(files_a) == 9 * 2 + 2  # images + xmls + two split files
    assert files_a["JPEGImages/000000.jpg"] != files_c["JPEGImages/000000.jpg"]


def test_train_images_do_not_depend_on_test_count(tmp_path):
    a = make_synthetic_voc(tmp_path / "a", num_train=4, num_test=0, seed=1)
    b = make_synthetic_voc(tmp_path / "b", num_train=4, num_test=5, seed=1)
    for k in range(4):
        assert (a / f"Annotations/{k:06d}.xml").read_bytes() == (b / f"Annotations/{k:06d}.xml").read_bytes()


def test_loads_with_voc_loader(tmp_path):
    root = make_synthetic_voc(tmp_path, num_train=20, num_test=10, image_size=(200, 160), seed=0)
    train, test = VOCDataset(root, "trainval"), VOCDataset(root, "test")
    assert len(train) == 20 and len(test) == 10
    assert not {r.image_id for r in train} & {r.image_id for r in test}
    assert set(train.class_names) <= {"circle", "square", "triangle"}
    for r in list(train) + list(test):
        assert (r.width, r.height) == (200, 160)
        assert 1 <= len(r.boxes) <= 4
        side = r.boxes[:, 2:] - r.boxes[:, :2]
        assert side.min() >= SIZE_RANGE[0] - 1 and side.max() <= SIZE_RANGE[1]
        assert (r.boxes[:, :2] >= 0).all() and (r.boxes[:, 2] <= 200).all() and (r.boxes[:, 3] <= 160).all()
    # Well separated: no two boxes of an image overlap.
    for r in train:
        for i in range(len(r.boxes)):
            for j in range(i + 1, len(r.boxes)):
                a, b = r.boxes[i], r.boxes[j]
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


def test_boxes_are_tight_on_the_drawn_pixels(tmp_path):
    root = make_synthetic_voc(tmp_path, num_train=12, num_test=0, seed=7, image_format="png")
    checked = 0
    for r in VOCDataset(root, "trainval"):
        sat = _saturated(read_image(r.path))
        for box in r.boxes.astype(int):  # integer edges: x1 is the first covered column
            x1, y1, x2, y2 = box
            inside = sat[y1:y2, x1:x2]
            # Every border row and column of the box holds a shape pixel...
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            # ...and the row / column just outside the box holds none.
            if y1 > 0:
                assert not sat[y1 - 1, x1:x2].any()
            if y2 < r.height:
                assert not sat[y2, x1:x2].any()
            if x1 > 0:
                assert not sat[y1:y2, x1 - 1].any()
            if x2 < r.width:
                assert not sat[y1:y2, x2].any()
            checked += 1
    assert checked >= 12


def test_class_colours_are_class_typical(tmp_path):
    root = make_synthetic_voc(tmp_path, num_train=15, num_test=0, seed=2, image_format="png")
    ds = VOCDataset(root, "trainval")
    for r in ds:
        image = read_image(r.path).astype(np.float32)
        for box, label in zip(r.boxes.astype(int), r.labels):
            x1, y1, x2, y2 = box
            # The box centre is inside every shape (convex shapes and the cross).
            colour = image[(y1 + y2) // 2, (x1 + x2) // 2]
            dists = {n: np.abs(colour - np.array(c)).max() for n, c in SHAPE_COLOURS.items()}
            assert min(dists, key=dists.get) == ds.class_names[label]


def test_difficult_objects_are_the_small_ones(tmp_path):
    root = make_synthetic_voc(tmp_path, num_train=60, num_test=0, seed=0)
    ds = VOCDataset(root, "trainval")
    sides = np.concatenate([r.boxes[:, 2] - r.boxes[:, 0] for r in ds])
    difficult = np.concatenate([r.difficult for r in ds])
    assert 0 < difficult.sum() < 0.2 * len(difficult)
    assert sides[difficult].max() < sides[~difficult].min() + 1


@pytest.mark.parametrize("shape", sorted(SHAPE_COLOURS))
@pytest.mark.parametrize("size", [30, 31, 64, 90])
def test_every_shape_touches_its_square(shape, size):
    mask = _shape_mask(shape, size)
    assert mask[0].any() and mask[-1].any() and mask[:, 0].any() and mask[:, -1].any()
    assert 0.15 < mask.mean() <= 1.0


def test_custom_classes_and_bad_arguments(tmp_path):
    root = make_synthetic_voc(tmp_path / "ok", num_train=8, num_test=0, classes=("diamond", "cross"))
    assert set(VOCDataset(root, "trainval").class_names) <= {"diamond", "cross"}
    root_xml = ET.parse(root / "Annotations/000000.xml").getroot()
    assert root_xml.find("size/width").text == "256"
    with pytest.raises(ValueError, match="hexagon"):
        make_synthetic_voc(tmp_path / "bad", num_train=1, num_test=0, classes=("hexagon",))
    with pytest.raises(ValueError, match="too small"):
        make_synthetic_voc(tmp_path / "bad", num_train=1, num_test=0, image_size=(64, 64))
    with pytest.raises(ValueError, match="image_format"):
        make_synthetic_voc(tmp_path / "bad", num_train=1, num_test=0, image_format="gif")
