"""bench/voc_density.py: windows per image, capped and found, on generated sets and photo folders."""
from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import write_noise_image

from bench.voc_density import main, summary


def test_summary_is_median_p10_p90_mean():
    assert summary(np.arange(11.0)) == {"median": 5.0, "p10": 1.0, "p90": 9.0, "mean": 5.0}


def test_record_holds_each_sets_windows_under_the_configs_cap(tmp_path):
    config = tmp_path / "c.yaml"  # a small search and a cap that binds on the clutter
    config.write_text("proposals:\n  max_side: 160\n  max_windows: 60\n")
    photos = tmp_path / "photos"
    photos.mkdir()
    for k in range(3):
        write_noise_image(photos / f"p{k}.png", seed=k)
    (photos / "notes.txt").write_text("not an image")
    out = tmp_path / "rec.json"
    assert main(["--config", str(config), "--images", "2", "--photos", str(photos),
                 "--scratch", str(tmp_path / "gen"), "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert set(record["sets"]) == {"voc_like_plain", "voc_like_clutter", str(photos)}
    assert record["proposals"]["max_windows"] == 60 and record["machine"] == "2 CPU cores, no GPU"
    assert record["command"].startswith("python -m bench.voc_density --config")
    assert record["sets"][str(photos)]["files"] == ["p0.png", "p1.png"]  # first 2 by name, images only
    for s in record["sets"].values():
        found = np.array(s["per_image"]["windows_all"])
        assert s["images"] == len(found) == 2 == len(s["per_image"]["seconds"])
        assert s["windows_all"] == summary(found)
        assert s["windows"] == summary(np.minimum(found, 60))
    assert record["sets"]["voc_like_clutter"]["windows_all"]["median"] > 60  # the cap binds there
    assert (tmp_path / "gen/clutter/JPEGImages/000001.jpg").exists()


def test_a_folder_without_images_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: no image files"):
        main(["--backgrounds", "--photos", str(tmp_path / "empty"), "--out", str(tmp_path / "r.json")])
