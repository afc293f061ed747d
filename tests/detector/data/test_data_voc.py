"""Tests for detector/data/voc.py on small VOC folders written in tmp_path."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from detector.data import VOC_CLASSES, DatasetError, VOCDataset, load_dataset, report_dropped_classes

W, H = 60, 40  # image size of the hand-made images
from helpers import TOOLS


def _obj(name, box, difficult=None):
    diff = "" if difficult is None else f"<difficult>{difficult}</difficult>"
    xmin, ymin, xmax, ymax = box
    return (f"<object><name>{name}</name>{diff}<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
            f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>")


def _xml(image_id, objects=(), size=(W, H), ext="jpg"):
    size_xml = "" if size is None else f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
    return f"<annotation><filename>{image_id}.{ext}</filename>{size_xml}{''.join(objects)}</annotation>"


def make_voc(root, annotations: dict, splits: dict | None = None, image_size=(W, H), ext="jpg"):
    """Write a VOC folder: annotations maps id -> XML text; splits name -> ids (None: no ImageSets)."""
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    for image_id, text in annotations.items():
        (root / "Annotations" / f"{image_id}.xml").write_text(text)
        Image.new("RGB", image_size, (90, 90, 90)).save(root / "JPEGImages" / f"{image_id}.{ext}")
    if splits is not None:
        (root / "ImageSets" / "Main").mkdir(parents=True)
        for name, ids in splits.items():
            (root / "ImageSets" / "Main" / f"{name}.txt").write_text("".join(i + "\n" for i in ids))
    return root


def test_exact_zero_based_conversion(tmp_path):
    # A VOC box covering 1-based pixels 1..10 (x) and 5..5 (y): 10 px wide, 1 px tall.
    root = make_voc(tmp_path, {"a": _xml("a", [_obj("dog", (1, 5, 10, 5), 1), _obj("cat", (3, 2, 60, 40))])},
                    {"trainval": ["a"]})
    ds = VOCDataset(root, "trainval", class_names=VOC_CLASSES)
    r = ds[0]
    np.testing.assert_array_equal(r.boxes, np.array([[0, 4, 10, 5], [2, 1, 60, 40]], np.float32))
    assert r.boxes.dtype == np.float32 and r.labels.dtype == np.int64
    assert [ds.class_names[i] for i in r.labels] == ["dog", "cat"]
    assert r.difficult.tolist() == [True, False]
    assert (r.image_id, r.width, r.height) == ("a", W, H)
    assert r.path == root / "JPEGImages" / "a.jpg"
    assert ds.split == "trainval" and ds.name == tmp_path.name and len(ds) == 1


def test_missing_difficult_means_zero(tmp_path):
    root = make_voc(tmp_path, {"a": _xml("a", [_obj("dog", (1, 1, 5, 5))])}, {"trainval": ["a"]})
    assert VOCDataset(root)[0].difficult.tolist() == [False]


def test_class_discovery_sorted_over_all_files_of_the_split(tmp_path):
    anns = {"a": _xml("a", [_obj("zebra", (1, 1, 5, 5))]),
            "b": _xml("b", [_obj("ant", (1, 1, 5, 5)), _obj("moose", (2, 2, 9, 9))]),
            "c": _xml("c", [_obj("yak", (1, 1, 5, 5))])}
    root = make_voc(tmp_path, anns, {"train": ["a", "b"], "val": ["c"]})
    ds = VOCDataset(root, "train")
    assert ds.class_names == ("ant", "moose", "zebra") and ds.num_classes == 3
    assert [ds.class_names[i] for i in ds[1].labels] == ["ant", "moose"]
    assert VOCDataset(root, "val").class_names == ("yak",)


def test_split_order_and_per_class_split_lines(tmp_path):
    anns = {i: _xml(i, [_obj("dog", (1, 1, 5, 5))]) for i in ("x", "y", "z")}
    root = make_voc(tmp_path, anns, {"test": ["z", "x"]})
    # VOC per-class files hold "<id> <flag>" lines; only the id counts.
    (root / "ImageSets/Main/dog_test.txt").write_text("z  1\nx -1\n\n")
    assert [r.image_id for r in VOCDataset(root, "test")] == ["z", "x"]
    assert [r.image_id for r in VOCDataset(root, "dog_test")] == ["z", "x"]


def test_missing_split_names_file_and_lists_available(tmp_path):
    root = make_voc(tmp_path, {"a": _xml("a")}, {"train": ["a"], "val": ["a"]})
    (root / "ImageSets/Main/dog_train.txt").write_text("a 1\n")
    with pytest.raises(DatasetError, match=r"test\.txt.*available: train, val$"):
        VOCDataset(root, "test")


def test_missing_imagesets_uses_all_annotations(tmp_path, caplog):
    anns = {i: _xml(i, [_obj("dog", (1, 1, 5, 5))]) for i in ("b", "a", "c")}
    root = make_voc(tmp_path, anns, splits=None)
    with caplog.at_level(logging.WARNING):
        ds = VOCDataset(root, "trainval")
    assert [r.image_id for r in ds] == ["a", "b", "c"]
    assert "ImageSets" in caplog.text


def test_not_a_voc_folder(tmp_path):
    with pytest.raises(DatasetError, match="Annotations"):
        VOCDataset(tmp_path, "trainval")


@pytest.mark.parametrize("text, problem", [
    ("<annotation><object>", "malformed XML"),
    ("", "empty"),
    (_xml("a", ["<object><name>dog</name></object>"]), "no <bndbox>"),
    (_xml("a", ["<object><name>dog</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax></bndbox></object>"]),
     "no <ymax>"),
    (_xml("a", [_obj("dog", (1, "one", 5, 5))]), "not a number: 'one'"),
    (_xml("a", ["<object><bndbox><xmin>1</xmin></bndbox></object>"]), "no <name>"),
    (_xml("a", [_obj("dog", (5, 1, 4, 5))]), "degenerate"),
    (_xml("a", [_obj("dog", (70, 1, 80, 5))]), "outside"),
    (_xml("a", [_obj("unicorn", (1, 1, 5, 5))]), "unknown class name.*unicorn"),
])
def test_invalid_annotation_names_the_file(tmp_path, text, problem):
    root = make_voc(tmp_path, {"a": text, "b": _xml("b", [_obj("dog", (1, 1, 5, 5))])}, {"trainval": ["a", "b"]})
    with pytest.raises(DatasetError, match=problem) as err:
        VOCDataset(root, "trainval", class_names=VOC_CLASSES)
    assert str(root / "Annotations" / "a.xml") in str(err.value)
    assert err.value.path == str(root / "Annotations" / "a.xml")


def test_skip_invalid_logs_and_keeps_the_rest(tmp_path, caplog):
    anns = {"a": "", "b": _xml("b", [_obj("dog", (1, 1, 5, 5))]), "c": _xml("c", [_obj("cat", (5, 1, 4, 5))])}
    root = make_voc(tmp_path, anns, {"trainval": ["a", "b", "c", "missing"]})
    with caplog.at_level(logging.WARNING):
        ds = VOCDataset(root, "trainval", skip_invalid=True)
    assert [r.image_id for r in ds] == ["b"]
    assert ds.class_names == ("dog",)  # classes of skipped files are not discovered
    for name in ("a.xml", "c.xml", "missing.xml"):
        assert name in caplog.text


def test_drop_other_classes_leaves_them_out_and_counts_them(tmp_path, caplog):
    anns = {"a": _xml("a", [_obj("cat", (1, 1, 5, 5)), _obj("dog", (2, 2, 9, 9), 1), _obj("cat", (3, 3, 8, 8))]),
            "b": _xml("b", [_obj("bird", (1, 1, 5, 5))])}
    root = make_voc(tmp_path, anns, {"test": ["a", "b"]})
    ds = VOCDataset(root, "test", class_names=["dog", "horse"], drop_other_classes=True)
    assert ds.dropped_classes == {"bird": 1, "cat": 2}
    np.testing.assert_array_equal(ds[0].boxes, [[1, 1, 9, 9]])
    assert ds[0].labels.tolist() == [0] and ds[0].difficult.tolist() == [True] and len(ds[1].boxes) == 0
    with caplog.at_level(logging.WARNING):
        assert report_dropped_classes(ds, root, "the model") == {"bird": 1, "cat": 2}
    assert "3 object(s) of class(es) not in the model are left out: bird (1), cat (2)" in caplog.text
    # Without the flag they stay an error; with nothing of the kept classes, reporting is one.
    with pytest.raises(DatasetError, match="unknown class name"):
        VOCDataset(root, "test", class_names=["dog", "horse"])
    only_others = VOCDataset(root, "test", class_names=["horse"], drop_other_classes=True)
    with pytest.raises(DatasetError, match=r"no object of a class in the model \(horse\); its objects are all "
                                           r"of class\(es\) not in the model: bird \(1\), cat \(2\), dog \(1\)"):
        report_dropped_classes(only_others, root, "the model")
    assert report_dropped_classes(VOCDataset(root, "test"), root, "the model") == {}


def test_split_listing_an_id_without_annotation(tmp_path):
    root = make_voc(tmp_path, {"a": _xml("a")}, {"trainval": ["a", "ghost"]})
    with pytest.raises(DatasetError, match=r"ghost\.xml: annotation file missing"):
        VOCDataset(root, "trainval")


def test_empty_object_list_is_valid(tmp_path):
    root = make_voc(tmp_path, {"a": _xml("a"), "b": _xml("b", [_obj("dog", (1, 1, 5, 5))])}, {"trainval": ["a", "b"]})
    r = VOCDataset(root, "trainval")[0]
    assert r.boxes.shape == (0, 4) and r.boxes.dtype == np.float32
    assert r.labels.shape == (0,) and r.difficult.shape == (0,)


def test_boxes_slightly_outside_are_clipped_with_warning(tmp_path, caplog):
    # xmax 62 > width 60, ymin 0 (VOC pixels start at 1): both clipped.
    root = make_voc(tmp_path, {"a": _xml("a", [_obj("dog", (50, 0, 62, 10))])}, {"trainval": ["a"]})
    with caplog.at_level(logging.WARNING):
        r = VOCDataset(root, "trainval")[0]
    np.testing.assert_array_equal(r.boxes, [[49, 0, 60, 10]])
    assert "a.xml" in caplog.text and "clipped" in caplog.text


def test_missing_image_file(tmp_path):
    root = make_voc(tmp_path, {"a": _xml("a")}, {"trainval": ["a"]})
    (root / "JPEGImages" / "a.jpg").unlink()
    with pytest.raises(DatasetError, match=r"a\.jpg: image file missing"):
        VOCDataset(root, "trainval")


def test_image_found_by_id_when_filename_is_wrong(tmp_path):
    text = _xml("a", [_obj("dog", (1, 1, 5, 5))]).replace("a.jpg", "renamed.jpg")
    root = make_voc(tmp_path, {"a": text}, {"trainval": ["a"]}, ext="png")
    assert VOCDataset(root, "trainval")[0].path == root / "JPEGImages" / "a.png"


@pytest.mark.parametrize("require_images", [True, False])
def test_filename_outside_jpegimages_is_ignored(tmp_path, require_images):
    # Unchecked (evaluation reads no images), the report's thumbnails would read ../../x.jpg.
    text = _xml("a", [_obj("dog", (1, 1, 5, 5))]).replace("a.jpg", "../../x.jpg")
    root = make_voc(tmp_path / "d", {"a": text}, {"trainval": ["a"]})
    Image.new("RGB", (W, H)).save(tmp_path / "x.jpg")
    r = VOCDataset(root, "trainval", require_images=require_images)[0]
    assert r.path == root / "JPEGImages" / "a.jpg"


@pytest.mark.parametrize("size_xml", [None, (0, 0)])
def test_missing_size_read_from_image_header(tmp_path, size_xml):
    root = make_voc(tmp_path, {"a": _xml("a", [_obj("dog", (1, 1, 5, 5))], size=size_xml)},
                    {"trainval": ["a"]}, image_size=(33, 21))
    r = VOCDataset(root, "trainval")[0]
    assert (r.width, r.height) == (33, 21)


def test_load_dataset_voc_and_unknown_format(tmp_path):
    root = make_voc(tmp_path, {"a": _xml("a", [_obj("dog", (1, 1, 5, 5))])}, {"test": ["a"]})
    ds = load_dataset(root, "test", class_names=["cat", "dog"])
    assert ds.class_names == ("cat", "dog") and ds[0].labels.tolist() == [1]
    assert load_dataset(root, "test", class_names=[]).class_names == ("dog",)
    with pytest.raises(DatasetError, match="unknown dataset format 'kitti'"):
        load_dataset(root, "test", format="kitti")


def test_dataset_stats_counts_by_hand(tmp_path):
    from detector.data.stats import compute_dataset_stats, format_dataset_stats

    anns = {"a": _xml("a", [_obj("dog", (1, 1, 10, 20), 1), _obj("dog", (1, 1, 40, 40)), _obj("cat", (5, 5, 8, 8))]),
            "b": _xml("b", [_obj("cat", (1, 1, 4, 4))]), "c": _xml("c")}
    root = make_voc(tmp_path, anns, {"trainval": ["a", "b", "c"]})
    s = compute_dataset_stats(VOCDataset(root, "trainval"))
    assert (s.num_images, s.num_objects, s.num_difficult, s.images_without_objects) == (3, 4, 1, 1)
    assert [(c.name, c.images, c.objects, c.difficult) for c in s.classes] == [("cat", 2, 2, 0), ("dog", 1, 2, 1)]
    assert s.boxes_per_image.tolist() == [3, 1, 0]
    assert sorted(s.box_widths.tolist()) == [4, 4, 10, 40] and sorted(s.box_heights.tolist()) == [4, 4, 20, 40]
    assert s.size_buckets() == (3, 1, 0)  # 40x40 = 1600 px^2 is "medium"
    text = format_dataset_stats(s)
    assert "3 images, 4 objects (1 difficult)" in text and "dog" in text


def test_dataset_stats_tool_exit_codes(tmp_path, capsys):
    import runpy
    import sys

    root = make_voc(tmp_path, {"a": _xml("a", [_obj("dog", (1, 1, 5, 5))])}, {"trainval": ["a"]})
    argv = sys.argv
    try:
        for split, code in (("trainval", 0), ("val", 2)):
            sys.argv = ["dataset_stats.py", "--data", str(root), "--split", split]
            with pytest.raises(SystemExit) as exit_:
                runpy.run_path(str(TOOLS / "dataset_stats.py"), run_name="__main__")
            assert exit_.value.code == code
    finally:
        sys.argv = argv
    out = capsys.readouterr()
    assert "1 images, 1 objects" in out.out
    assert out.err.startswith("error: ") and "val.txt" in out.err and "Traceback" not in out.err
