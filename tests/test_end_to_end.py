"""Train and test the whole pipeline on a small generated dataset; the mAP must be high."""
import json

import numpy as np
import pytest

from detector.config import load_detector_config
from detector.data import make_synthetic_voc
from detector.inference import detect_files
from detector.model import load_model
from detector.testing import run_test
from detector.training import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    data = make_synthetic_voc(root / "data", num_train=40, num_test=16, seed=3)
    cfg = load_detector_config(None, [
        f"data.root={data}", f"workdir={root / 'run'}", "backbone.name=tiny", "features.scales=[288]",
        "finetune.hidden=256", "finetune.iterations=300", "finetune.bank_bg_per_image=64",
        "proposals.workers=1"])
    model_path = train(cfg, progress=False)
    return root, cfg, model_path


def test_end_to_end_map_is_high(trained):
    root, cfg, model_path = trained
    detector = load_model(model_path)
    run = run_test(detector, "test", root / "test", progress=False)
    metrics = json.loads((root / "test" / "metrics.json").read_text())
    assert metrics["mAP"] == pytest.approx(run.result.mAP)
    assert run.result.mAP > 0.8, metrics["AP"]
    assert (root / "test" / "detections.json").exists()
    assert len(list((root / "test" / "voc").glob("comp4_det_test_*.txt"))) == 3


def test_training_resumes_from_stage_checkpoints(trained):
    root, cfg, model_path = trained
    stages = sorted(p.name for p in (root / "run" / "stages").iterdir())
    assert any(s.startswith("finetune-") for s in stages) and any(s.startswith("svm-") for s in stages)
    before = model_path.stat().st_mtime_ns
    train(cfg, progress=False)  # every stage is cached: must reuse, not retrain
    report = json.loads((root / "run" / "train_report.json").read_text())
    assert report["stats"]["finetune"].get("resumed") is True
    assert report["stats"]["svm"].get("resumed") is True
    assert model_path.stat().st_mtime_ns >= before


def test_detect_folder_skips_non_images(trained, tmp_path):
    root, cfg, model_path = trained
    detector = load_model(model_path)
    img_dir = tmp_path / "in"
    img_dir.mkdir()
    src = sorted((root / "data" / "JPEGImages").iterdir())[-1]
    (img_dir / "a.jpg").write_bytes(src.read_bytes())
    (img_dir / "notes.txt").write_text("not an image")
    (img_dir / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    summary = detect_files(detector, sorted(img_dir.iterdir()), tmp_path / "out", progress=False)
    assert [r["file"].endswith("a.jpg") for r in summary["images"]] == [True]
    assert {s["file"].split("/")[-1] for s in summary["skipped"]} == {"notes.txt", "broken.jpg"}
    assert summary["images"][0]["detections"], "no detections on a training-like image"
    assert (tmp_path / "out" / "a_jpg_det.jpg").exists()


def load_tool(name):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "tools" / f"{name}.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_test_and_detect_tools(trained, tmp_path, capsys):
    root, cfg, model_path = trained
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
    image = sorted((root / "data" / "JPEGImages").iterdir())[0]
    assert load_tool("detect").main(["--model", str(model_path), "--input", str(image),
                                     "--output", str(tmp_path / "d"), "--no-progress"]) == 0
    results = json.loads((tmp_path / "d" / "results.json").read_text())
    assert len(results["images"]) == 1 and results["images"][0]["detections"]
