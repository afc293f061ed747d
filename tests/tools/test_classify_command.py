"""`sppnet classify train|evaluate|predict` end to end on generated shapes, and its errors."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from detector.classification.config import ClassifyDataConfig
from detector.classification.data import load_classification_set, read_examples
from detector.commands import main

# Small and fast on the tiny backbone: 2-level pyramid, 64 and 48 px in turn.
FAST = ["backbone.name=tiny", "model.levels=[2,1]", "model.trainable_blocks=1", "input.sizes=[64,48]",
        "train.epochs=6", "train.lr=0.01"]


@pytest.fixture(scope="module")
def folder_data(voc_data, tmp_path_factory):
    """The generated VOC set's objects as an ImageFolder layout: <root>/<split>/<class>/<n>.png."""
    root = tmp_path_factory.mktemp("folder")
    for split, voc_split in (("train", "trainval"), ("test", "test")):
        data = load_classification_set(ClassifyDataConfig(root=str(voc_data), format="voc"), voc_split)
        for k, (example, pixels) in enumerate(zip(data.examples, read_examples(data.examples))):
            folder = root / split / data.class_names[example.label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(folder / f"{k:04d}.png")
    return root


def report(folder) -> dict:
    return json.loads((folder / "report.json").read_text())


def test_train_on_detection_crops_multi_size_then_evaluate_and_predict(voc_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["classify", "train", "data.format=voc", f"data.root={voc_data}", "data.train_split=trainval",
                 *FAST, f"workdir={run}"]) == 0
    record = report(run)
    assert record["train"]["epoch_sizes"] == [64, 48, 64, 48, 64, 48]  # one size per epoch, in turn
    assert set(record["train"]["map_seconds"]) == {"64", "48"}
    ev = record["evaluation"]
    assert ev["class_names"] == ["circle", "square", "triangle"] and ev["size"] == 64
    assert np.array(ev["confusion"]).sum() == ev["count"] > 20
    assert ev["top1"] >= 0.8, ev  # coloured shapes: easy
    md = (run / "report.md").read_text()
    assert "Top-1 accuracy" in md and "| true \\ predicted | circle | square | triangle |" in md

    # evaluate: the same split gives the same numbers; another test size is a test-time override.
    out = tmp_path / "eval"
    assert main(["classify", "evaluate", "--model", str(run / "model.pt"), "--out", str(out)]) == 0
    assert report(out)["evaluation"]["confusion"] == ev["confusion"]
    assert main(["classify", "evaluate", "--model", str(run / "model.pt"), "--out", str(out),
                 "input.test_size=48"]) == 0
    assert report(out)["evaluation"]["size"] == 48

    # predict: one row per image, with a class name and a probability.
    capsys.readouterr()
    assert main(["classify", "predict", "--model", str(run / "model.pt"), "--input", str(voc_data / "JPEGImages"),
                 "--output", str(tmp_path / "pred")]) == 0
    rows = list(csv.DictReader((tmp_path / "pred" / "predictions.csv").open()))
    assert len(rows) == 56 and {r["class"] for r in rows} <= {"circle", "square", "triangle"}
    assert all(0 < float(r["score"]) <= 1 for r in rows)


def test_train_at_own_sizes_from_an_image_folder_and_predict_its_classes(folder_data, tmp_path):
    run = tmp_path / "run"
    assert main(["classify", "train", f"data.root={folder_data}", "input.mode=own", "model.bin_rule=paper",
                 *FAST, f"workdir={run}"]) == 0
    assert report(run)["evaluation"]["top1"] >= 0.8
    test_images = sorted((folder_data / "test").glob("*/*.png"))
    assert main(["classify", "predict", "--model", str(run / "model.pt"), "--input",
                 str(folder_data / "test" / "*" / "*.png"), "--output", str(tmp_path / "pred")]) == 0
    rows = list(csv.DictReader((tmp_path / "pred" / "predictions.csv").open()))
    right = sum(r["class"] == p.parent.name for r, p in zip(rows, test_images))
    assert len(rows) == len(test_images) and right >= 0.8 * len(rows)


def test_global_pool_baseline_trains_too(voc_data, tmp_path):
    run = tmp_path / "run"
    assert main(["classify", "train", "data.format=voc", f"data.root={voc_data}", "data.train_split=trainval",
                 *FAST, "model.pool=global", "input.sizes=[64]", f"workdir={run}"]) == 0
    assert report(run)["train"]["epoch_sizes"] == [64] * 6


def test_too_small_for_the_paper_pyramid_is_one_clear_error(voc_data, tmp_path, capsys):
    rc = main(["classify", "train", "data.format=voc", f"data.root={voc_data}", "data.train_split=trainval",
               *FAST, "model.levels=[6,3,2,1]", "model.bin_rule=paper", "input.sizes=[48]", f"workdir={tmp_path}"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "is 3x3 cells, smaller than the 6x6 that levels (6, 3, 2, 1) need with the 'paper' bin rule" in err


@pytest.mark.parametrize("argv, message", [
    (["evaluate", "--model", "{tmp}/none.pt", "--out", "{tmp}/o"], "{tmp}/none.pt: model file not found"),
    (["train", "data.root={tmp}", "workdir={tmp}/run"], "{tmp}/train: no such folder"),
    (["train", "data.format=folder", "data.root={tmp}", "model.pool=avg"], "model.pool 'avg' must be one of"),
])
def test_bad_input_exits_2_naming_the_problem(argv, message, tmp_path, capsys):
    rc = main(["classify", *[a.format(tmp=tmp_path) for a in argv]])
    assert rc == 2 and message.format(tmp=tmp_path) in capsys.readouterr().err


def test_an_unknown_action_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["classify", "bogus"])
    assert e.value.code == 2 and "invalid choice: 'bogus'" in capsys.readouterr().err


def test_evaluate_refuses_to_change_what_the_model_was_trained_with(voc_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["classify", "train", "--no-eval", "data.format=voc", f"data.root={voc_data}",
                 "data.train_split=trainval", *FAST, "train.epochs=1", f"workdir={run}"]) == 0
    capsys.readouterr()
    assert main(["classify", "evaluate", "--model", str(run / "model.pt"), "--out", str(tmp_path / "e"),
                 "model.hidden=8"]) == 2
    assert "evaluate may change only data and input.test_size" in capsys.readouterr().err


def test_a_detector_model_file_is_not_taken_for_a_classifier(tmp_path, capsys):
    from helpers import write_small_model

    write_small_model(tmp_path / "det.pt", with_regressors=False)
    assert main(["classify", "predict", "--model", str(tmp_path / "det.pt"), "--input", str(tmp_path),
                 "--output", str(tmp_path / "o")]) == 2
    assert "det.pt: not an SPP-net classifier file (no 'sppnet-classifier' header)" in capsys.readouterr().err
