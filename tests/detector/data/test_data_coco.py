"""Tests for detector/data/coco.py: COCO loading and in-memory COCO ground truth."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detector.data import (COCODataset, DatasetError, InMemoryDataset, VOCDataset, coco_image_ids,
                           load_dataset, make_synthetic_voc, voc_to_coco_dict)
from detector.records import ImageRecord


def write_coco(tmp_path, images=None, annotations=None, categories=None):
    """A two-image COCO file with non-contiguous category ids (3 = cat, 7 = dog)."""
    (tmp_path / "img").mkdir(exist_ok=True)
    images = images or [{"id": 42, "file_name": "x.png", "width": 50, "height": 30},
                        {"id": 5, "file_name": "y.png", "width": 20, "height": 20}]
    for im in images:
        Image.new("RGB", (im.get("width") or 17, im.get("height") or 13)).save(tmp_path / "img" / im["file_name"])
    annotations = annotations if annotations is not None else [
        {"id": 1, "image_id": 42, "category_id": 7, "bbox": [1.5, 2.0, 10.0, 4.25], "area": 42.5, "iscrowd": 0},
        {"id": 2, "image_id": 42, "category_id": 3, "bbox": [0, 0, 50, 30], "area": 1500, "iscrowd": 1},
        {"id": 3, "image_id": 5, "category_id": 3, "bbox": [15, 15, 10, 10], "area": 100, "iscrowd": 0},
    ]
    categories = categories or [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}]
    path = tmp_path / "instances_val.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def test_load_converts_xywh_crowd_and_ids(tmp_path):
    ds = COCODataset(write_coco(tmp_path), tmp_path / "img")
    assert ds.class_names == ("cat", "dog")  # category-id order
    assert ds.label_to_category_id == (3, 7) and ds.category_id_to_label == {3: 0, 7: 1}
    assert [r.image_id for r in ds] == ["5", "42"]  # str(coco id), sorted by id
    r = ds[1]
    assert (r.width, r.height, r.path.name) == (50, 30, "x.png")
    np.testing.assert_array_equal(r.boxes, np.array([[1.5, 2.0, 11.5, 6.25], [0, 0, 50, 30]], np.float32))
    assert r.labels.tolist() == [1, 0] and r.difficult.tolist() == [False, True]
    # Image 5's box [15, 15, 10, 10] reaches 25 > 20: clipped to the image.
    np.testing.assert_array_equal(ds[0].boxes, [[15, 15, 20, 20]])
    assert ds.split == "instances_val"


def test_class_names_subset_drops_other_categories(tmp_path):
    ds = COCODataset(write_coco(tmp_path), tmp_path / "img", class_names=["dog"])
    assert ds.class_names == ("dog",) and ds.label_to_category_id == (7,)
    assert [len(r.boxes) for r in ds] == [0, 1]
    assert ds.dropped_classes == {"cat": 2}
    with pytest.raises(DatasetError, match="horse"):
        COCODataset(write_coco(tmp_path), tmp_path / "img", class_names=["horse"])


def test_zero_area_boxes_dropped_and_missing_size_read_from_header(tmp_path):
    images = [{"id": 1, "file_name": "z.png"}]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [3, 3, 0, 5], "area": 0, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [3, 3, 2, 5], "area": 10, "iscrowd": 0}]
    ds = COCODataset(write_coco(tmp_path, images, anns, [{"id": 1, "name": "a"}]), tmp_path / "img")
    assert (ds[0].width, ds[0].height) == (17, 13)
    np.testing.assert_array_equal(ds[0].boxes, [[3, 3, 5, 8]])


def test_bad_files_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DatasetError, match="bad.json: malformed JSON"):
        COCODataset(bad, tmp_path)
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(DatasetError, match="not a COCO file"):
        COCODataset(bad, tmp_path)
    with pytest.raises(DatasetError, match="nothere.json: annotation file missing"):
        COCODataset(tmp_path / "nothere.json", tmp_path)
    path = write_coco(tmp_path)
    (tmp_path / "img" / "y.png").unlink()
    with pytest.raises(DatasetError, match=r"y\.png: image file missing"):
        COCODataset(path, tmp_path / "img")


def test_load_dataset_coco_with_split_template(tmp_path):
    write_coco(tmp_path)
    ds = load_dataset(tmp_path, "val", format="coco", annotations="instances_{split}.json", images="img")
    assert isinstance(ds, COCODataset) and ds.split == "val" and len(ds) == 2
    with pytest.raises(DatasetError, match="annotations"):
        load_dataset(tmp_path, "val", format="coco")


def _coco_from_dict(d):
    coco = COCO()
    coco.dataset = d
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def test_voc_to_coco_dict_round_trip_through_coco_loader(tmp_path):
    root = make_synthetic_voc(tmp_path / "voc", num_train=6, num_test=0, seed=5)
    voc = VOCDataset(root, "trainval")
    d = voc_to_coco_dict(voc)
    assert [c["id"] for c in d["categories"]] == [1, 2, 3][:voc.num_classes]
    assert [im["id"] for im in d["images"]] == [1, 2, 3, 4, 5, 6]  # "000000".. are not canonical ints
    ann = d["annotations"][0]
    box = voc[0].boxes[0]
    assert ann["bbox"] == pytest.approx([box[0], box[1], box[2] - box[0], box[3] - box[1]])
    assert ann["area"] == pytest.approx((box[2] - box[0]) * (box[3] - box[1]))
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(d))
    back = COCODataset(path, root / "JPEGImages")
    assert back.class_names == voc.class_names
    for a, b in zip(voc, back):
        np.testing.assert_allclose(a.boxes, b.boxes)
        assert a.labels.tolist() == b.labels.tolist()
        assert a.difficult.tolist() == b.difficult.tolist()  # difficult -> iscrowd -> difficult


def test_voc_to_coco_dict_keeps_coco_ids_and_scores_perfectly(tmp_path):
    ds = COCODataset(write_coco(tmp_path), tmp_path / "img")
    d = voc_to_coco_dict(ds)
    assert sorted(im["id"] for im in d["images"]) == [5, 42]
    assert {a["category_id"] for a in d["annotations"]} == {3, 7}
    assert [a["iscrowd"] for a in d["annotations"] if a["image_id"] == 42] == [0, 1]
    # The non-crowd ground truth as detections: pycocotools scores AP = 1.
    gt = _coco_from_dict(d)
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
            for a in d["annotations"] if not a["iscrowd"]]
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)


def test_coco_image_ids_fall_back_to_positions():
    recs = [ImageRecord(i, path=Path(f"{i}.jpg"), width=4, height=4)
            for i in ("2008_000001", "2008_000002")]
    ds = InMemoryDataset(recs, ["a"], name="t", split="s")
    assert coco_image_ids(ds) == {"2008_000001": 1, "2008_000002": 2}
    mixed = InMemoryDataset([ImageRecord(i, path=recs[0].path, width=4, height=4) for i in ("7", "01")],
                            ["a"], name="t", split="s")
    assert coco_image_ids(mixed) == {"7": 1, "01": 2}  # "01" is not canonical: positions
    dup = InMemoryDataset([recs[0], recs[0]], ["a"], name="t", split="s")
    with pytest.raises(DatasetError, match="not unique"):
        coco_image_ids(dup)
    assert voc_to_coco_dict(ds)["categories"] == [{"id": 1, "name": "a", "supercategory": "none"}]
