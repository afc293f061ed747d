"""Tests of detector.data.voc_writer: XML our VOC loader reads back, box for box."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
from PIL import Image

from detector.data import VOCDataset
from detector.data.voc_writer import format_voc_xml, voc_objects

NAMES = ("cat", "dog & co")


def test_integer_boxes_round_trip_exactly(tmp_path):
    boxes = np.array([[0, 0, 10, 20], [5.2, 3.7, 60.4, 47.5], [90, 10, 100, 80]], np.float32)
    labels = np.array([0, 1, 1])
    (tmp_path / "JPEGImages").mkdir()
    Image.new("RGB", (100, 80)).save(tmp_path / "JPEGImages" / "a.png")
    (tmp_path / "Annotations").mkdir()
    xml = format_voc_xml("a.png", 100, 80, voc_objects(boxes, labels, NAMES, 100, 80))
    (tmp_path / "Annotations" / "a.xml").write_text(xml)
    rec = VOCDataset(tmp_path, "any", class_names=NAMES)[0]
    np.testing.assert_array_equal(rec.boxes, np.round(boxes))  # edges rounded to whole pixels
    np.testing.assert_array_equal(rec.labels, labels)
    assert not rec.difficult.any() and (rec.width, rec.height) == (100, 80)
    tree = ET.fromstring(xml)  # the devkit layout LabelImg and CVAT import
    assert tree.findtext("filename") == "a.png" and tree.findtext("size/depth") == "3"
    assert [o.findtext("name") for o in tree.iter("object")] == ["cat", "dog & co", "dog & co"]
    assert tree.find("object/bndbox").findtext("xmin") == "1"  # 1-based


def test_tiny_and_outside_boxes_keep_a_pixel_inside():
    (o1, o2) = voc_objects(np.array([[10.2, 10.2, 10.4, 10.4], [-5, -5, 120, 90]]), [0, 0], NAMES, 100, 80)
    assert (o1.xmin, o1.xmax) == (11, 11) and (o1.ymin, o1.ymax) == (11, 11)
    assert (o2.xmin, o2.ymin, o2.xmax, o2.ymax) == (1, 1, 100, 80)
    assert voc_objects(np.zeros((0, 4)), [], NAMES, 10, 10) == []
