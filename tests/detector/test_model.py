import pickle

import numpy as np
import pytest
import torch

import dataclasses

from helpers import small_detector

from detector.model import ModelFileError, load_model, save_model


def test_save_load_round_trip_gives_same_detections(tmp_path):
    det = small_detector()
    path = tmp_path / "m.pt"
    save_model(path, det, extra={"note": "x"})
    det2 = load_model(path)
    image = np.random.default_rng(1).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    windows = np.array([[0, 0, 50, 50], [20, 10, 90, 80], [5, 5, 120, 90]], np.float32)
    det.test = dataclasses.replace(det.test, score_threshold=-1e9)
    det2.test = dataclasses.replace(det2.test, score_threshold=-1e9)
    a, b = det.detect(image, windows), det2.detect(image, windows)
    assert len(a) > 0
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5)
    np.testing.assert_allclose(a.boxes, b.boxes, rtol=1e-5)
    assert det2.class_names == ("a", "b")
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # atomic: no temp file left


def test_model_without_regressors_round_trips(tmp_path):
    det = small_detector(with_regressors=False)
    save_model(tmp_path / "m.pt", det)
    assert load_model(tmp_path / "m.pt").regressors is None


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(ModelFileError, match="bad.pt"):
        load_model(bad)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ModelFileError, match="not an SPP-net model"):
        load_model(other)


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_load_refuses_pickled_code(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"format": "sppnet-detector", "x": Evil()}, f)
    with pytest.raises(ModelFileError):
        load_model(path)


def test_model_of_an_older_mapping_rule_is_flagged(tmp_path, caplog):
    path = tmp_path / "m.pt"
    save_model(path, small_detector(with_regressors=False))
    state = torch.load(path, weights_only=True)
    del state["mapping_version"]  # files written before the rule was recorded: rule 1
    torch.save(state, path)
    with caplog.at_level("WARNING"):
        load_model(path)
    assert "window-mapping rule 1" in caplog.text and "retrain" in caplog.text


def test_cuda_trained_model_loads_on_the_cpu(tmp_path):
    path = tmp_path / "m.pt"
    det = small_detector(with_regressors=False)
    det.config = dataclasses.replace(det.config, device="cuda")
    save_model(path, det)
    loaded = load_model(path, device="cpu")
    assert loaded.backbone.device.type == "cpu" and loaded.config.device == "cuda"  # provenance kept
