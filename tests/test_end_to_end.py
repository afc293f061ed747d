"""Train and test the whole pipeline on a small generated dataset; the mAP must be high."""
import dataclasses
import json

import numpy as np

import pytest
from helpers import load_tool

from detector.configio import to_dict
from detector.inference.folders import detect_files
from detector.model import load_model, load_trained
from detector.inference.split_test import EvaluationOptions, run_model_test
from detector.training.train import train


def test_end_to_end_map_is_high(trained_run):
    model = load_trained(trained_run.model_path)
    out = trained_run.root / "test"
    run = run_model_test(model, EvaluationOptions("test", out, progress=False))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mAP"] == pytest.approx(run.result.mAP)
    assert metrics["config"] == json.loads(json.dumps(to_dict(trained_run.cfg)))  # the model file's provenance
    assert run.result.mAP > 0.8, metrics["AP"]
    assert run.without_bbox is not None and metrics["without_bbox_regression"]["mAP"] == pytest.approx(
        run.without_bbox.mAP)
    assert (out / "detections.json").exists()
    assert len(list((out / "voc").glob("comp4_det_test_*.txt"))) == 3
    # The unregressed detections are written too, and `sppnet evaluate` scores them as reported.
    assert load_tool("evaluate").main(["--data", str(trained_run.data), "--split", "test",
                                       "--detections", str(out / "detections_without_bbox.json"),
                                       "--out", str(trained_run.root / "eval_plain"),
                                       "--classes", ",".join(model.detector.class_names)]) == 0
    again = json.loads((trained_run.root / "eval_plain" / "metrics.json").read_text())
    assert again["mAP"] == pytest.approx(run.without_bbox.mAP)
    regressed = json.loads((out / "detections.json").read_text())
    unregressed = json.loads((out / "detections_without_bbox.json").read_text())
    assert [d["bbox"] for d in regressed] != [d["bbox"] for d in unregressed]  # regression moved boxes


def test_training_resumes_from_stage_checkpoints(trained_run, caplog):
    stages = sorted(p.name for p in (trained_run.root / "run" / "stages").iterdir())
    assert any(s.startswith("finetune-") for s in stages) and any(s.startswith("svm-") for s in stages)
    before = trained_run.model_path.stat().st_mtime_ns
    with caplog.at_level("INFO"):
        again = train(trained_run.cfg, progress=False)  # every stage is cached: must reuse, not retrain
    assert sorted(again.reused_stages) == ["bbox", "finetune", "svm"]
    report = json.loads(again.report_path.read_text())
    assert report["stats"]["finetune"].get("resumed") is True
    assert report["stats"]["svm"].get("resumed") is True
    assert "stage finetune: reused" in caplog.text
    assert trained_run.model_path.stat().st_mtime_ns >= before


def test_spp_test_features_cache_gives_the_same_detections(trained_run, tmp_path):
    model = load_trained(trained_run.model_path)
    plain = run_model_test(model, EvaluationOptions("test", tmp_path / "plain", progress=False))
    cached = run_model_test(model, EvaluationOptions("test", tmp_path / "cached", cache_dir=tmp_path / "cache",
                                                     cache_features=True, progress=False))
    assert any((tmp_path / "cache" / "test_features" / "conv5").rglob("*.npz"))
    assert cached.result.mAP == pytest.approx(plain.result.mAP, abs=0.02)  # float16 maps on disk


def test_detect_folder_skips_non_images(trained_run, tmp_path):
    detector = load_model(trained_run.model_path)
    img_dir = tmp_path / "in"
    img_dir.mkdir()
    src = sorted((trained_run.data / "JPEGImages").iterdir())[-1]
    (img_dir / "a.jpg").write_bytes(src.read_bytes())
    (img_dir / "notes.txt").write_text("not an image")
    (img_dir / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    summary = detect_files(detector, sorted(img_dir.iterdir()), tmp_path / "out", progress=False)
    assert [r["file"].endswith("a.jpg") for r in summary["images"]] == [True]
    assert {s["file"].split("/")[-1] for s in summary["skipped"]} == {"notes.txt", "broken.jpg"}
    assert summary["images"][0]["detections"], "no detections on a training-like image"
    assert (tmp_path / "out" / "a_jpg_det.jpg").exists()


def test_test_and_detect_tools(trained_run, tmp_path, capsys):
    model_path = trained_run.model_path
    assert load_tool("test").main(["--model", str(model_path), "--split", "test", "--out", str(tmp_path / "t"),
                                   "--metric", "voc12", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "mean" in out and "seconds per image" in out
    metrics = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert metrics["metric"] == "voc12" and metrics["mAP"] > 0.8
    assert set(metrics["timings"]["seconds_per_image"]) >= {"conv", "pool", "fc", "svm", "bbox", "nms"}
    assert "without_bbox_regression" in metrics and metrics["versions"]["torch"]
    assert metrics["analysis"]["confusion_matrix"]["labels"][-1] == "background"
    assert "Error breakdown" in (tmp_path / "t" / "report.html").read_text()
    image = sorted((trained_run.data / "JPEGImages").iterdir())[0]
    assert load_tool("detect").main(["--model", str(model_path), "--input", str(image),
                                     "--output", str(tmp_path / "d"), "--no-progress"]) == 0
    results = json.loads((tmp_path / "d" / "results.json").read_text())
    assert len(results["images"]) == 1 and results["images"][0]["detections"]


def test_softmax_scorer_ranks_as_well(trained_run, tmp_path):
    model = load_trained(trained_run.model_path, overrides=["test.scorer=softmax", "test.score_threshold=0.05"])
    run = run_model_test(model, EvaluationOptions("test", tmp_path / "softmax", progress=False))
    scores = np.concatenate([d.scores for d in run.detections.values()])
    assert len(scores) and scores.min() >= 0.05 and scores.max() <= 1.0  # probabilities
    assert run.result.mAP > 0.8, run.result.ap


def test_softmax_scorer_needs_a_fine_tuned_head(trained_run):
    from detector.build import build_detector
    base = load_model(trained_run.model_path)
    cfg = trained_run.cfg
    cfg = dataclasses.replace(cfg, finetune=dataclasses.replace(cfg.finetune, enabled=False),
                              test=dataclasses.replace(cfg.test, scorer="softmax"))
    with pytest.raises(ValueError, match="finetune.enabled=false"):
        build_detector(cfg, base.class_names, base.backbone, base.head, base.svms)


def test_detect_tool_searches_with_test_time_proposal_overrides(trained_run, tmp_path):
    """`sppnet detect ... proposals.max_side=N` (the faster folder run of the README) searches with
    N in the pipelined workers: its detections are those of the windows that search gives."""
    from detector.images import read_image
    from proposals import propose_with_config

    images = sorted((trained_run.data / "JPEGImages").iterdir())[:2]
    img_dir = tmp_path / "in"
    img_dir.mkdir()
    for src in images:
        (img_dir / src.name).write_bytes(src.read_bytes())
    assert load_tool("detect").main(["--model", str(trained_run.model_path), "--input", str(img_dir),
                                     "--output", str(tmp_path / "d"), "--threshold", "-100", "--no-progress",
                                     "proposals.max_side=96"]) == 0
    results = json.loads((tmp_path / "d" / "results.json").read_text())["images"]
    detector = load_model(trained_run.model_path)
    small = dataclasses.replace(detector.proposals, max_side=96)
    assert max(read_image(images[0]).shape[:2]) > 96  # the override changes the search
    for entry, src in zip(results, images):
        image = read_image(src)
        windows = propose_with_config(image, small)
        assert not np.array_equal(windows, propose_with_config(image, detector.proposals))
        expected = detector.detect(image, windows)
        got = np.array([d["box"] for d in entry["detections"]], dtype=np.float32).reshape(-1, 4)
        assert len(got) == len(expected.boxes)
        np.testing.assert_allclose(got, expected.boxes, atol=0.01)
