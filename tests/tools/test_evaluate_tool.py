"""End-to-end test of tools/evaluate.py on a tiny generated VOC tree."""
from __future__ import annotations

import json

import numpy as np
import pytest

from detector.commands.entry import run_cli
from detector.data import VOCDataset, make_synthetic_voc
from detector.evaluation import write_coco_results, write_voc_results
from detector.records import Detections

from helpers import load_tool

CLASSES = ("circle", "square", "triangle")


@pytest.fixture(scope="module")
def voc_tree(tmp_path_factory):
    root = make_synthetic_voc(tmp_path_factory.mktemp("voc"), num_train=0, num_test=4,
                              image_size=(128, 128), seed=3, classes=CLASSES, image_format="png")
    records = list(VOCDataset(root, "test", class_names=CLASSES))
    # Every gt box found (score 0.9), plus one miss per image (score 0.95):
    # every class then has a false positive ranked first.
    dets = {}
    for k, r in enumerate(records):
        miss = np.array([[0, 0, 3, 3]], np.float32)
        dets[r.image_id] = Detections(np.concatenate([r.boxes, miss]),
                                      np.r_[np.full(len(r.boxes), 0.9), 0.95].astype(np.float32),
                                      np.r_[r.labels, k % len(CLASSES)].astype(np.int64))
    return root, records, dets


def run_tool(argv):
    tool = load_tool("evaluate")
    return run_cli(lambda: tool.main([str(a) for a in argv]))


def test_voc_folder_end_to_end(voc_tree, tmp_path, capsys):
    root, records, dets = voc_tree
    write_voc_results(tmp_path / "voc", dets, CLASSES, "test")
    out = tmp_path / "eval"
    assert run_tool(["--data", root, "--split", "test", "--detections", tmp_path / "voc",
                     "--out", out, "--classes", ",".join(CLASSES)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"mAP", "AP", "metric", "n_gt", "n_det", "versions", "config", "timings"} <= metrics.keys()
    assert metrics["metric"] == "voc07"
    assert set(metrics["AP"]) == set(CLASSES)
    assert {"python", "torch", "torchvision", "numpy", "platform"} <= metrics["versions"].keys()
    n_gt = {c: sum(int(((r.labels == i) & ~r.difficult).sum()) for r in records)
            for i, c in enumerate(CLASSES)}
    assert metrics["n_gt"] == n_gt
    assert sum(metrics["n_det"].values()) == sum(len(d) for d in dets.values())
    # Recall reaches 1 in every class; the first-ranked miss costs precision.
    for c in CLASSES:
        if n_gt[c]:
            assert 0.5 < metrics["AP"][c] < 1.0
        else:
            assert metrics["AP"][c] is None
    report = (out / "report.md").read_text()
    assert "11-point" in report and "| mean |" not in report and "**mean**" in report
    for c in CLASSES:
        assert (out / "pr_curves" / f"{c}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "pr_curves.png").is_file()
    assert metrics["analysis"]["errors"]["false_positives_total"]["background"] == len(records)  # the misses
    assert (out / "report.html").is_file() and (out / "confusion_matrix.png").is_file()
    printed = capsys.readouterr().out
    assert "circle" in printed and "mean" in printed


def test_coco_json_and_metrics(voc_tree, tmp_path):
    root, records, dets = voc_tree
    perfect = {r.image_id: Detections(r.boxes, np.full(len(r.boxes), 0.9, np.float32), r.labels)
               for r in records}
    write_coco_results(tmp_path / "res.json", perfect, CLASSES)
    for metric, key in (("coco", "mAP"), ("voc12", "mAP")):
        out = tmp_path / metric
        assert run_tool(["--data", root, "--split", "test", "--detections", tmp_path / "res.json",
                         "--out", out, "--metric", metric, "--classes", ",".join(CLASSES)]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["metric"] == metric
        assert metrics[key] == pytest.approx(1.0)


def test_errors_exit_2_without_traceback(voc_tree, tmp_path, capsys):
    root, _, _ = voc_tree
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    assert run_tool(["--data", root, "--split", "test", "--detections", bad, "--out", tmp_path / "o"]) == 2
    err = capsys.readouterr().err
    assert "bad.json" in err and "invalid JSON" in err and "Traceback" not in err
    assert run_tool(["--data", root, "--split", "test", "--detections", tmp_path / "nothing",
                     "--out", tmp_path / "o"]) == 2
    assert "no such detections" in capsys.readouterr().err
    assert run_tool(["--data", tmp_path, "--split", "test", "--detections", bad,
                     "--out", tmp_path / "o"]) == 2
    assert "not a VOC-layout folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # argparse: usage error, exit 2
        run_tool(["--data", root, "--split", "test", "--detections", bad, "--out", tmp_path / "o",
                  "--metric", "coco", "--iou", "0.7"])
    assert e.value.code == 2
