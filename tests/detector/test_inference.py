"""Tests of detector.inference.folders: inputs, streaming results, VOC pseudo-labels and COCO results.

A stub stands in for the detector (same ``class_names`` and ``detect``), so
no model is trained here; tests/test_end_to_end.py runs a real one.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from detector.data import VOCDataset
from detector.evaluation import read_coco_results
from detector.inference.folders import detect_files, list_inputs, unique_ids
from detector.records import Detections

NAMES = ("cat", "dog")
BOXES = np.array([[4, 6, 30, 40], [10, 10, 50, 30], [0, 0, 8, 8]], np.float32)


class StubDetector:
    class_names = NAMES

    def detect(self, image, windows=None, name=""):
        return Detections(BOXES, np.array([0.9, 0.6, 0.1], np.float32), np.array([0, 1, 1]))


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.jpg", "b.png", "sub/c.jpg", "a.png"):
        Image.new("RGB", (64, 48), (90, 120, 150)).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_list_inputs_folder_glob_and_list_file(images, tmp_path):
    assert [p.name for p in list_inputs(images)] == ["a.jpg", "a.png", "b.png", "notes.txt"]
    assert [p.name for p in list_inputs(f"{images}/**/*.jpg")] == ["a.jpg", "c.jpg"]
    listing = images / "list.txt"
    listing.write_text("# photos\nb.png\n\nsub/c.jpg\n")
    assert list_inputs(listing) == [images / "b.png", images / "sub" / "c.jpg"]
    assert list_inputs(images / "a.jpg") == [images / "a.jpg"]
    with pytest.raises(FileNotFoundError, match="matches no file"):
        list_inputs(f"{images}/*.tif")
    with pytest.raises(FileNotFoundError, match="no such file"):
        list_inputs(tmp_path / "nothing")
    assert unique_ids([images / "a.jpg", images / "a.png", images / "sub" / "a.jpg"]) == ["a", "a_2", "a_3"]
    # A real a_2.jpg does not share its id; odd stems become plain VOC ids.
    assert unique_ids([images / "a.jpg", images / "a.png", images / "a_2.jpg"]) == ["a", "a_2", "a_2_2"]
    assert unique_ids([images / "...jpg", images / "a\\b.jpg", images / "a_b.jpg"]) == ["__", "a_b", "a_b_2"]


def test_folder_run_to_voc_and_coco(images, tmp_path):
    out = tmp_path / "out"
    summary = detect_files(StubDetector(), list_inputs(images), out, threshold=0.5, progress=False,
                           save_voc=True, save_coco=True, pipeline=False)  # the stub has no search
    assert [r["file"].split("/")[-1] for r in summary["images"]] == ["a.jpg", "a.png", "b.png"]
    assert [s["file"].split("/")[-1] for s in summary["skipped"]] == ["notes.txt"]
    assert all(len(r["detections"]) == 2 for r in summary["images"])  # 0.1 is below the threshold
    # Streamed: one line per file, in order, the skipped one included.
    lines = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]
    assert len(lines) == 4 and "skipped" in lines[-1] and lines[0]["detections"][0]["class"] == "cat"
    assert json.loads((out / "results.json").read_text()) == summary
    assert (out / "a_jpg_det.jpg").is_file() and (out / "a_2_png_det.jpg").is_file()  # named by the ids
    # The VOC folder is a dataset our loader reads: the pseudo-labels to train on.
    voc = VOCDataset(out / "voc", "trainval", class_names=NAMES)
    assert [r.image_id for r in voc] == ["a", "a_2", "b"]
    for r in voc:
        np.testing.assert_array_equal(r.boxes, BOXES[:2])
        np.testing.assert_array_equal(r.labels, [0, 1])
        assert (r.width, r.height) == (64, 48) and r.path.is_file()
    coco = read_coco_results(out / "coco_results.json", NAMES,
                             image_ids={r["file"]: r["coco_image_id"] for r in summary["images"]})
    assert len(coco) == 3 and all(len(d) == 2 for d in coco.values())


def test_folder_listing_says_what_it_leaves_out(images, caplog):
    (images / "gone.jpg").symlink_to(images / "no_such_target.jpg")
    with caplog.at_level("WARNING"):
        files = list_inputs(images)
    assert [p.name for p in files] == ["a.jpg", "a.png", "b.png", "notes.txt"]
    assert "1 subfolder(s) (sub; --recursive" in caplog.text and "1 broken link(s) (gone.jpg)" in caplog.text
    caplog.clear()
    deep = list_inputs(images, recursive=True)
    assert [p.relative_to(images).as_posix() for p in deep] == ["a.jpg", "a.png", "b.png", "notes.txt", "sub/c.jpg"]
    assert "subfolder" not in caplog.text
