"""Tests of the analysis in the reports: metrics.json, report.md, report.html (self-contained)."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from detector.data import VOCDataset, make_synthetic_voc
from detector.evaluation import analyse_detections, evaluate_voc, write_report
from detector.evaluation.error_examples import crop_box, draw_example, draw_examples
from detector.evaluation.analysis import ErrorExample
from detector.records import Detections

CLASSES = ("circle", "square", "triangle")


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    root = make_synthetic_voc(tmp_path_factory.mktemp("voc"), num_train=0, num_test=4,
                              image_size=(128, 128), seed=5, classes=CLASSES, image_format="png")
    records = list(VOCDataset(root, "test", class_names=CLASSES))
    dets = {}
    for k, r in enumerate(records):  # every object found (image 0's first as the next class), one false positive
        labels = r.labels.copy()
        labels[0] = (labels[0] + (k == 0)) % len(CLASSES)
        boxes = np.concatenate([r.boxes, [[0, 0, 6, 6]]]).astype(np.float32)
        dets[r.image_id] = Detections(boxes, np.r_[np.linspace(0.9, 0.5, len(r.boxes)), 0.7].astype(np.float32),
                                      np.r_[labels, k % 3].astype(np.int64))
    return records, dets


def test_analysis_in_every_report_file(problem, tmp_path):
    records, dets = problem
    result = evaluate_voc(records, dets, CLASSES)
    analysis = analyse_detections(records, dets, CLASSES)
    assert analysis.threshold_rule == "best F1 over all classes"
    assert analysis.errors.mAP == pytest.approx(result.mAP)
    assert analysis.errors.fp_total["confusion"] == 1  # the relabelled object
    assert analysis.errors.fp_total["background"] == len(records)
    files = write_report(tmp_path, result, timings={"seconds_per_image": {"conv": 0.1}, "images": 4},
                         analysis=analysis)
    metrics = json.loads(files.metrics.read_text())
    assert {"errors", "confusion_matrix", "f1", "ap_by_size", "examples"} <= metrics["analysis"].keys()
    n = len(CLASSES)
    assert np.asarray(metrics["analysis"]["confusion_matrix"]["matrix"]).shape == (n + 1, n + 1)
    md = files.report.read_text()
    for section in ("## Operating point and F1", "## Errors", "## Confusion matrix", "## Worst errors",
                    "AP small", "confusion_matrix.png"):
        assert section in md
    for name in ("f1_curves.png", "confusion_matrix.png", "errors.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    page = files.html.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    srcs = re.findall(r'src="([^"]*)"', page)
    assert len(srcs) >= 4 + len(analysis.examples)  # PR, F1, confusion, errors + one per example
    assert all(s.startswith("data:image/") for s in srcs)  # nothing to fetch: opens offline
    assert not re.search(r"(href|src)=\"?(https?:|//|file:)", page)
    for text in ("Average precision per class", "Confusion matrix", "Error breakdown",
                 "Worst false positives and missed objects", "Timings", "Versions", "torch"):
        assert text in page


def test_report_without_analysis_still_writes_html(problem, tmp_path):
    records, dets = problem
    files = write_report(tmp_path, evaluate_voc(records, dets, CLASSES))
    page = files.html.read_text()
    assert "Average precision per class" in page and "Confusion matrix" not in page
    assert "analysis" not in json.loads(files.metrics.read_text())


def test_example_thumbnail_crop_and_unreadable_image(tmp_path):
    e = ErrorExample("localisation", "x", str(tmp_path / "missing.png"), "cat", (10, 10, 20, 30), 0.5,
                     (12, 10, 22, 20))
    assert crop_box(e, 100, 100) == (0, 0, 32, 40)  # union (10, 10, 22, 30), 10 px context, clipped at 0
    thumb = draw_example(np.zeros((100, 100, 3), np.uint8), e, height=80)
    assert thumb.shape == (80, 64, 3) and thumb[..., 0].max() > 0  # red box drawn
    assert draw_examples([e]) == []  # the image is not there: no thumbnail, no error
