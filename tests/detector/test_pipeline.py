"""Pipelined inference (detector.inference.pipeline, proposals.compute.stream_split): the same
detections as the sequential path, in input order."""
from __future__ import annotations

import json

import numpy as np

from detector.inference.folders import detect_files
from detector.model import load_model, load_trained
from detector.inference.pipeline import propose_files
from detector.inference.split_test import EvaluationOptions, run_model_test
from proposals.compute import stream_split


def _detections(summary):
    return [(r["file"], r["detections"]) for r in summary["images"]]


def test_pipelined_folder_run_equals_sequential(trained_run, tmp_path):
    detector = load_model(trained_run.model_path, device="cpu", overrides=["proposals.workers=2"])
    files = sorted((trained_run.data / "JPEGImages").iterdir())[:5]
    (tmp_path / "notes.txt").write_text("not an image")
    files.insert(2, tmp_path / "notes.txt")
    piped = detect_files(detector, files, tmp_path / "piped", progress=False)
    plain = detect_files(detector, files, tmp_path / "plain", progress=False, pipeline=False)
    assert _detections(piped) == _detections(plain)
    assert [r["file"] for r in piped["images"]] == [str(f) for f in files if f.suffix == ".jpg"]
    assert piped["skipped"] == plain["skipped"]
    lines = [json.loads(l) for l in (tmp_path / "piped" / "results.jsonl").read_text().splitlines()]
    assert len(lines) == len(files)


def test_propose_files_keeps_input_order_and_the_detectors_windows(trained_run):
    detector = load_model(trained_run.model_path, device="cpu")
    files = sorted((trained_run.data / "JPEGImages").iterdir())[:4]
    from detector.images import read_image
    got = [(path, future.result()) for path, future in propose_files(files, detector.proposals, 2, 2)]
    assert [p for p, _ in got] == files
    for path, windows in got:
        np.testing.assert_array_equal(windows, detector.propose(read_image(path)))


def test_pipelined_test_run_equals_sequential(trained_run, tmp_path):
    model = load_trained(trained_run.model_path, device="cpu", overrides=["proposals.workers=2"])
    piped = run_model_test(model, EvaluationOptions("test", tmp_path / "piped", cache_dir=tmp_path / "cache_piped",
                                                    progress=False))
    plain = run_model_test(model, EvaluationOptions("test", tmp_path / "plain", cache_dir=tmp_path / "cache_plain",
                                                    progress=False, pipeline=False))
    assert piped.detections.keys() == plain.detections.keys()
    for key, dets in plain.detections.items():
        np.testing.assert_array_equal(piped.detections[key].boxes, dets.boxes)
        np.testing.assert_array_equal(piped.detections[key].scores, dets.scores)
    assert piped.result.mAP == plain.result.mAP
    # The stream consolidated its store: a second pipelined run reads it without searching.
    assert list((tmp_path / "cache_piped" / "proposals").rglob("all.npz"))
    again = run_model_test(model, EvaluationOptions("test", tmp_path / "again", cache_dir=tmp_path / "cache_piped",
                                                    progress=False))
    assert again.result.mAP == plain.result.mAP


def test_stream_split_yields_records_in_order(trained_run, tmp_path):
    from detector.build import build_dataset
    records = list(build_dataset(trained_run.cfg.data, "test"))[:5]
    cfg = trained_run.cfg.proposals
    streamed = list(stream_split(records, cfg, tmp_path / "cache", "synthetic", "test", workers=2))
    assert [r.image_id for r, _ in streamed] == [r.image_id for r in records]
    from proposals import propose_with_config
    from detector.images import read_image
    np.testing.assert_array_equal(streamed[3][1], propose_with_config(read_image(records[3].path), cfg))
