"""proposals.tune: the candidates, the choice rule, the cache, and proposals.auto in training."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from detector.records import ImageRecord
from proposals import ProposalConfig
from proposals.store import cache_params
from proposals.tune import candidate_settings, sample_records, tune_proposals


def record(image_id, boxes, width=200, height=200):
    boxes = np.asarray(boxes, np.float32)
    return ImageRecord(image_id, Path(f"{image_id}.png"), width, height, boxes, np.zeros(len(boxes), np.int64),
                       np.zeros(len(boxes), bool))


def test_candidates_scale_k_with_the_searched_area_and_lower_min_size_for_small_objects():
    recs = [record("a", [[0, 0, 10, 40], [50, 50, 60, 90]])]  # 10 px sides: small for min_size 20
    names = dict(candidate_settings(ProposalConfig(), recs))
    assert list(names) == ["configured", "k_scaled", "small_min_size", "quality", "union", "dense"]
    assert (names["k_scaled"].base_k, names["k_scaled"].inc_k) == (16, 16)  # 100 x (200 / 500)^2
    assert names["small_min_size"].min_size == 6 and names["union"].min_size == 6
    # Thin objects (scratches 4 px wide): min_size goes down to their shorter side, not just a third.
    thin = [record("t", [[0, 0, 40, 4], [50, 50, 54, 90], [100, 100, 130, 130]])]
    assert dict(candidate_settings(ProposalConfig(), thin))["dense"].min_size == 4
    # VOC-sized images with large objects: nothing to scale, min_size stays.
    big = [record("b", [[0, 0, 200, 300]], width=500, height=375)]
    assert "k_scaled" not in dict(candidate_settings(ProposalConfig(), big))
    assert "small_min_size" not in dict(candidate_settings(ProposalConfig(), big))


def fake_search(hits: dict):
    """propose_with_config stand-in: the box itself for the settings named in ``hits``, else nothing."""
    def search(image, cfg, image_id=None):
        return np.array([[20, 20, 60, 60]], np.float32) if hits.get(cfg.method) else np.zeros((0, 4), np.float32)
    return search


@pytest.mark.parametrize("hits, chosen", [
    ({"opencv_fast": True, "union": True, "dense": True}, "configured"),  # fits: kept, though dense is cheaper
    ({"union": True, "dense": True}, "union_or_dense"),                    # the cheaper of the two that reach
    ({}, "configured"),                                                    # none reaches: best recall (a tie)
])
def test_choice_keeps_a_fitting_setting_else_the_cheapest_that_reaches(hits, chosen, monkeypatch):
    import proposals.tune as tune

    monkeypatch.setattr(tune, "propose_with_config", fake_search(hits))
    recs = [record("a", [[20, 20, 60, 60]])]
    result = tune_proposals(recs, lambda r: np.zeros((200, 200, 3), np.uint8), ("x",), ProposalConfig(auto=True),
                            target=0.95)
    assert result.chosen.auto is False
    if chosen == "union_or_dense":
        reaching = [r for r in result.rows if r.recall_50 == 1.0]
        assert result.chosen_name == min(reaching, key=lambda r: r.seconds_per_image).name
        assert result.reached and result.chosen.method == result.chosen_name
    else:
        assert result.chosen_name == chosen and result.reached == bool(hits)
    assert json.loads(json.dumps(result.as_dict()))["chosen"] == result.chosen_name


def test_auto_fields_key_no_cache():
    assert cache_params(ProposalConfig()) == cache_params(ProposalConfig(auto=True, auto_target=0.8, auto_sample=5))


def test_sample_records_is_seeded_and_skips_images_without_objects():
    recs = [record(str(i), [[0, 0, 30, 30]] if i % 2 else np.zeros((0, 4))) for i in range(20)]
    a, b = sample_records(recs, 4, seed=1), sample_records(recs, 4, seed=1)
    assert [r.image_id for r in a] == [r.image_id for r in b] and all(len(r.boxes) for r in a)
    assert len(sample_records(recs, 50, seed=0)) == 10


TINY = ["backbone.name=tiny", "features.scales=[192]", "finetune.hidden=64", "finetune.iterations=20",
        "finetune.bank_bg_per_image=16", "proposals.workers=1", "svm.initial_negatives=30",
        "svm.mining_rounds=1", "bbox.enabled=false", "data.flip=false"]


def test_train_with_proposals_auto_records_the_choice_and_test_searches_the_same_way(tmp_path, caplog, capsys):
    """On the generated defects the configured search misses; auto picks a grid setting, the model
    file's config holds it, a resumed run reuses the trial, and sppnet test searches with it."""
    import logging

    from detector.commands import main
    from detector.data.defects import make_defect_voc
    from detector.model import load_model

    data = make_defect_voc(tmp_path / "data", num_train=8, num_test=2, seed=1)
    argv = ["train", "--no-progress", f"data.root={data}", f"workdir={tmp_path / 'run'}", "proposals.auto=true",
            "proposals.auto_sample=4", "proposals.max_windows=300", *TINY]
    with caplog.at_level(logging.INFO):
        assert main(argv) == 0
    report = json.loads((tmp_path / "run" / "train_report.json").read_text())
    tuning = report["proposal_tuning"]
    assert tuning["chosen"] in ("union", "dense") and tuning["sample_images"] == 4
    assert {r["name"] for r in tuning["tried"]} >= {"configured", "union", "dense"}
    proposals_cfg = report["config"]["proposals"]
    assert proposals_cfg["method"] == tuning["chosen"] and proposals_cfg["auto"] is False
    assert report["proposal_recall"]["recall_50"] > 0.5
    assert load_model(tmp_path / "run" / "model.pt").proposals.method == tuning["chosen"]  # what it runs
    capsys.readouterr()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main(argv) == 0  # resumed: the trial is read back, not searched again
    assert any("proposals.auto: reused" in r.getMessage() for r in caplog.records)
    assert main(["test", "--no-progress", "--model", str(tmp_path / "run" / "model.pt"), "--split", "test",
                 "--out", str(tmp_path / "t")]) == 0
    assert any(p.name.startswith(f"{tuning['chosen']}-") for p in (tmp_path / "run" / "cache").rglob("*") if p.is_dir())
