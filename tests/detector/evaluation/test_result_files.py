"""Tests of detector.evaluation.result_files: round trips, formats, errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from detector.evaluation.result_files import (ResultFileError, read_coco_results, read_voc_results,
                                              voc_result_path, write_coco_results, write_voc_results)
from detector.records import Detections

NAMES = ("aeroplane", "car", "racecar", "traffic light")


def random_detections(seed, ids=("000001", "000002", "000017")):
    rng = np.random.default_rng(seed)
    out = {}
    for image_id in ids:
        n = int(rng.integers(0, 7))
        xy = rng.uniform(0, 300, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(1, 100, (n, 2))], 1).astype(np.float32)
        out[image_id] = Detections(boxes, rng.random(n).astype(np.float32),
                                   rng.integers(0, len(NAMES), n).astype(np.int64))
    return out


def by_label(dets):
    """{(image_id, label): sorted rows (score, x1, y1, x2, y2)}: order-free comparison."""
    out = {}
    for image_id, d in dets.items():
        for b, s, l in zip(d.boxes, d.scores, d.labels):
            out.setdefault((image_id, int(l)), []).append((float(s), *map(float, b)))
    return {k: sorted(v) for k, v in out.items()}


def test_voc_round_trip_is_exact(tmp_path):
    dets = random_detections(0)
    paths = write_voc_results(tmp_path, dets, NAMES, "test")
    assert [p.name for p in paths] == [f"comp4_det_test_{n}.txt" for n in NAMES]
    back = read_voc_results(tmp_path, NAMES, "test")
    assert by_label(back) == by_label({k: v for k, v in dets.items() if len(v)})
    # The split can be inferred from the file names.
    assert by_label(read_voc_results(tmp_path, NAMES)) == by_label(back)
    for d in back.values():
        assert d.boxes.dtype == np.float32 and d.scores.dtype == np.float32
        assert d.labels.dtype == np.int64


def test_voc_writes_one_based_pixels(tmp_path):
    # Our (0, 1, 10, 20) is the devkit's xmin=1, ymin=2, xmax=10, ymax=20.
    dets = {"000005": Detections(np.array([[0, 1, 10, 20]], np.float32), np.array([0.5], np.float32),
                                 np.array([1]))}
    write_voc_results(tmp_path, dets, NAMES, "val")
    line = voc_result_path(tmp_path, "val", "car").read_text().split()
    assert line == ["000005", "0.5", "1.0", "2.0", "10.0", "20.0"]
    assert voc_result_path(tmp_path, "val", "aeroplane").read_text() == ""


def test_voc_reads_devkit_style_file(tmp_path):
    (tmp_path / "comp4_det_test_car.txt").write_text(
        "000001 0.912 49.0 11.0 150.0 100.0\n\n000001 0.100 1 1 5 5\n000009 0.5 3.5 4 9 9\n")
    (tmp_path / "comp4_det_test_racecar.txt").write_text("000009 0.7 1 1 2 2\n")
    (tmp_path / "comp4_det_val_car.txt").write_text("garbage\n")  # other split: ignored
    (tmp_path / "notes.txt").write_text("ignored\n")
    dets = read_voc_results(tmp_path, NAMES, "test")
    np.testing.assert_array_equal(dets["000001"].boxes, [[48, 10, 150, 100], [0, 0, 5, 5]])
    np.testing.assert_allclose(dets["000001"].scores, [0.912, 0.1])
    assert dets["000001"].labels.tolist() == [1, 1]
    assert sorted(dets["000009"].labels.tolist()) == [1, 2]  # "racecar" is not "car"


def test_voc_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "comp4_det_test_car.txt"
    bad.write_text("000001 0.9 1 1 5 5\n000002 0.9 1 1 5\n")
    with pytest.raises(ResultFileError, match=r"comp4_det_test_car\.txt:2: expected 6 fields"):
        read_voc_results(tmp_path, NAMES, "test")
    bad.write_text("000001 high 1 1 5 5\n")
    with pytest.raises(ResultFileError, match=r"comp4_det_test_car\.txt:1: not a number"):
        read_voc_results(tmp_path, NAMES, "test")
    bad.write_text("000001 nan 1 1 5 5\n")
    with pytest.raises(ResultFileError, match=r":1: non-finite"):
        read_voc_results(tmp_path, NAMES, "test")
    bad.unlink()
    (tmp_path / "comp4_det_test_boat.txt").write_text("000001 0.9 1 1 5 5\n")
    with pytest.raises(ResultFileError, match=r"comp4_det_test_boat\.txt: file name names no known class"):
        read_voc_results(tmp_path, NAMES, "test")
    with pytest.raises(ResultFileError, match="no known class"):
        read_voc_results(tmp_path, NAMES)
    with pytest.raises(ResultFileError, match="no comp4_det_val_"):
        read_voc_results(tmp_path, NAMES, "val")
    with pytest.raises(ResultFileError, match="not a folder"):
        read_voc_results(tmp_path / "missing", NAMES)


def test_voc_mixed_splits_need_a_split(tmp_path):
    (tmp_path / "comp4_det_test_car.txt").write_text("000001 0.9 1 1 5 5\n")
    (tmp_path / "comp4_det_val_car.txt").write_text("000002 0.9 1 1 5 5\n")
    with pytest.raises(ResultFileError, match="several splits"):
        read_voc_results(tmp_path, NAMES)
    assert list(read_voc_results(tmp_path, NAMES, "val")) == ["000002"]


def test_coco_round_trip_is_exact(tmp_path):
    dets = random_detections(1, ids=("42", "000007", "img_3"))
    path = tmp_path / "res.json"
    write_coco_results(path, dets, NAMES)
    entries = json.loads(path.read_text())
    ids = {e["image_id"] for e in entries}
    # "42" is a canonical integer -> a JSON number; "000007" would lose its zeros.
    assert ids <= {42, "000007", "img_3"}
    assert {e["category_id"] for e in entries} <= {1, 2, 3, 4}
    back = read_coco_results(path, NAMES)
    assert by_label(back) == by_label({k: v for k, v in dets.items() if len(v)})


def test_coco_xywh_and_category_mapping(tmp_path):
    dets = {"7": Detections(np.array([[10, 20, 40, 60]], np.float32), np.array([0.25], np.float32),
                            np.array([3]))}
    mapping = {"aeroplane": 5, "car": 3, "racecar": 9, "traffic light": 10}
    path = tmp_path / "res.json"
    write_coco_results(path, dets, NAMES, category_ids=mapping)
    assert json.loads(path.read_text()) == [
        {"image_id": 7, "category_id": 10, "bbox": [10.0, 20.0, 30.0, 40.0], "score": 0.25}]
    back = read_coco_results(path, NAMES, category_ids=mapping)
    assert list(back) == ["7"] and back["7"].labels.tolist() == [3]
    np.testing.assert_array_equal(back["7"].boxes, [[10, 20, 40, 60]])


@pytest.mark.parametrize("text, message", [
    ("[{\"image_id\": 1,", "invalid JSON at line 1"),
    ("{\"a\": 1}", "expected a JSON list"),
    ("[{\"image_id\": 1, \"bbox\": [0, 0, 1, 1], \"score\": 1}]", "entry 0: expected an object"),
    ("[{\"image_id\": 1, \"category_id\": 99, \"bbox\": [0, 0, 1, 1], \"score\": 1}]",
     "entry 0: unknown category_id 99"),
    ("[{\"image_id\": 1, \"category_id\": 1, \"bbox\": [0, 0, 1], \"score\": 1}]",
     "entry 0: bbox must be 4"),
    ("[{\"image_id\": 1, \"category_id\": 1, \"bbox\": [0, 0, 1, 1], \"score\": \"x\"}]",
     "entry 0: bbox must be 4"),
    ("[{\"image_id\": 1.5, \"category_id\": 1, \"bbox\": [0, 0, 1, 1], \"score\": 1}]",
     "entry 0: image_id must be"),
])
def test_coco_errors_name_file_and_entry(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ResultFileError, match="bad.json: " + message):
        read_coco_results(path, NAMES)


def test_coco_explicit_image_id_mapping(tmp_path):
    # VOC ids numbered by position, as detector.data.coco_image_ids does.
    dets = random_detections(2, ids=("000005", "2008_000001"))
    ids = {"000005": 1, "2008_000001": 2}
    path = tmp_path / "res.json"
    write_coco_results(path, dets, NAMES, image_ids=ids)
    assert {e["image_id"] for e in json.loads(path.read_text())} <= {1, 2}
    back = read_coco_results(path, NAMES, image_ids=ids)
    assert by_label(back) == by_label({k: v for k, v in dets.items() if len(v)})
    with pytest.raises(ResultFileError, match="image_id 2 is not one of the dataset's ids"):
        read_coco_results(path, NAMES, image_ids={"000005": 1})
