import pickle

import numpy as np
import pytest
import torch

import dataclasses

from helpers import small_detector, small_model, write_small_model

from detector.model import ModelFileError, load_model, load_trained, read_model_config, save_model


def keep_all(det):
    """``det`` keeping every window above any score."""
    return dataclasses.replace(det, test=dataclasses.replace(det.test, score_threshold=-1e9))


def test_save_load_round_trip_gives_same_detections(tmp_path):
    model = small_model()
    path = tmp_path / "m.pt"
    save_model(path, model.detector, model.config, extra={"note": "x"})
    det, det2 = keep_all(model.detector), keep_all(load_model(path))
    image = np.random.default_rng(1).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    windows = np.array([[0, 0, 50, 50], [20, 10, 90, 80], [5, 5, 120, 90]], np.float32)
    a, b = det.detect(image, windows), det2.detect(image, windows)
    assert len(a) > 0
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5)
    np.testing.assert_allclose(a.boxes, b.boxes, rtol=1e-5)
    assert det2.class_names == ("a", "b")
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # atomic: no temp file left


def test_model_without_regressors_round_trips(tmp_path):
    assert load_model(write_small_model(tmp_path / "m.pt", with_regressors=False)).regressors is None


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
    path = write_small_model(tmp_path / "m.pt", with_regressors=False)
    state = torch.load(path, weights_only=True)
    del state["mapping_version"]  # files written before the rule was recorded: rule 1
    torch.save(state, path)
    with caplog.at_level("WARNING"):
        load_model(path)
    assert "window-mapping rule 1" in caplog.text and "retrain" in caplog.text


def test_cuda_trained_model_loads_on_the_cpu(tmp_path):
    path = tmp_path / "m.pt"
    model = small_model(with_regressors=False)
    save_model(path, model.detector, dataclasses.replace(model.config, device="cuda"))
    loaded = load_trained(path, device="cpu")
    assert loaded.detector.backbone.device.type == "cpu" and loaded.config.device == "cuda"  # provenance kept


def test_the_model_file_keeps_the_config_the_detector_does_not(tmp_path):
    """Issue 22: the detector holds what it runs; the config it came from is the file's provenance,
    read back with the test-time overrides applied."""
    model = small_model(with_regressors=False)
    path = tmp_path / "m.pt"
    save_model(path, model.detector, dataclasses.replace(model.config, seed=7))
    assert not hasattr(model.detector, "config")
    assert read_model_config(path).seed == 7
    changed = read_model_config(path, ["test.nms_iou=0.4"])
    assert (changed.seed, changed.test.nms_iou) == (7, 0.4)
    loaded = load_trained(path, overrides=["test.nms_iou=0.4"])
    assert loaded.config == changed and loaded.detector.test == changed.test  # what runs is the overridden test


def test_a_variant_shares_the_parts(tmp_path):
    det = small_detector(with_regressors=False)
    lent = det.with_reserved_cores(2)
    assert (lent.reserved_cores, det.reserved_cores) == (2, 0)
    assert all(getattr(lent, f) is getattr(det, f) for f in ("features", "head", "svms", "test", "proposals"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        det.test = lent.test  # a variant is derived, never patched in place


def test_a_model_file_whose_config_has_a_retired_key_loads(tmp_path):
    # Model files written before issue 29 store bbox.max_mb; the provenance drops it, while a
    # config file or override that sets it is an error giving the reason it went.
    from detector.config import ConfigError, load_detector_config
    path = write_small_model(tmp_path / "m.pt")
    state = torch.load(path, weights_only=True)
    state["config"]["bbox"]["max_mb"] = 1000.0
    torch.save(state, path)
    assert read_model_config(path).bbox == load_detector_config(None).bbox
    assert load_model(path).regressors is not None
    with pytest.raises(ConfigError, match=r"command line: bbox.max_mb no longer exists \(issue 29: box regression "
                                          r"accumulates normal equations image by image, no budget\); remove it"):
        load_detector_config(None, ["bbox.max_mb=1000"])
    old = tmp_path / "old.yaml"
    old.write_text("bbox:\n  max_mb: 1000\n")
    with pytest.raises(ConfigError, match=f"{old}: bbox.max_mb no longer exists"):
        load_detector_config(old)
