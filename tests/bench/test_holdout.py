"""bench/holdout.py: a held-out val split that the loader reads, disjoint from train, the source untouched."""
from __future__ import annotations

import json
import random
import shutil

import pytest

from bench.holdout import HoldoutError, hold_out, main, make_root
from detector.data import load_dataset
from detector.data.synthetic import make_synthetic_voc


def test_hold_out_is_seeded_disjoint_and_keeps_order():
    ids = [f"im{i:03d}" for i in range(50)]
    kept, held = hold_out(ids, 0.2, seed=3)
    assert len(held) == 10 and len(kept) == 40
    assert set(kept) | set(held) == set(ids) and not set(kept) & set(held)
    assert kept == [i for i in ids if i in set(kept)] and held == [i for i in ids if i in set(held)]
    assert hold_out(ids, 0.2, seed=3) == (kept, held)
    assert hold_out(ids, 0.2, seed=4)[1] != held


@pytest.mark.parametrize("fraction", [0.0, 1.0, 0.001, 0.999])
def test_a_fraction_holding_out_none_or_all_is_refused(fraction):
    with pytest.raises(HoldoutError, match="fraction"):
        hold_out([f"im{i}" for i in range(20)], fraction, seed=0)


def test_the_linked_root_loads_and_the_source_is_unchanged(tmp_path):
    src = tmp_path / "src"
    make_synthetic_voc(src, num_train=10, num_test=4, seed=0)
    before = sorted((p.relative_to(src), p.stat().st_mtime_ns) for p in src.rglob("*"))
    out = tmp_path / "out"
    record = make_root(src, out, "trainval", 0.3, seed=1)
    assert (record["train"], record["val"]) == (7, 3)
    assert json.loads((out / "holdout.json").read_text())["val_ids"] == record["val_ids"]
    train, val, test = (load_dataset(str(out), split) for split in ("train", "val", "test"))
    assert len(train) == 7 and len(val) == 3 and len(test) == 4
    assert not {r.image_id for r in train} & {r.image_id for r in val}
    assert (out / "JPEGImages").is_symlink() and (out / "Annotations").is_symlink()
    assert sorted((p.relative_to(src), p.stat().st_mtime_ns) for p in src.rglob("*")) == before
    # a second run into the same folder is refused rather than mixing two splits
    with pytest.raises(HoldoutError, match="not empty"):
        make_root(src, out, "trainval", 0.3, seed=2)


def test_a_missing_split_is_a_clear_error(tmp_path, capsys):
    src = tmp_path / "src"
    make_synthetic_voc(src, num_train=4, num_test=2, seed=0)
    with pytest.raises(SystemExit) as e:
        main(["--data", str(src), "--out", str(tmp_path / "out"), "--split", "nosuch"])
    assert e.value.code == 2
    assert "nosuch.txt: no such split file; splits available: test, trainval" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing written for a refused split


def test_a_root_without_images_is_refused_before_anything_is_written(tmp_path):
    src = tmp_path / "src"
    make_synthetic_voc(src, num_train=4, num_test=2, seed=0)
    shutil.rmtree(src / "JPEGImages")
    with pytest.raises(HoldoutError, match="JPEGImages: missing"):
        make_root(src, tmp_path / "out", "trainval", 0.5, seed=0)
    assert not (tmp_path / "out").exists()


def test_the_folds_of_one_seed_are_disjoint_and_fold_0_is_the_first_draw():
    ids = [f"im{i:03d}" for i in range(160)]
    helds = [hold_out(ids, 0.2, seed=0, fold=k)[1] for k in range(5)]
    assert all(len(h) == 32 for h in helds)
    assert len(set().union(*helds)) == 160  # 5 disjoint folds cover every id
    # fold 0 is the draw the tool made before folds existed (raccoon's recorded split, 160 ids at 0.2)
    first = sorted(random.Random(0).sample(range(160), 32))
    assert helds[0] == [ids[i] for i in first]
    with pytest.raises(HoldoutError, match="--fold 5: 160 images hold 5 disjoint folds of 32"):
        hold_out(ids, 0.2, seed=0, fold=5)


def test_the_fold_is_recorded(tmp_path):
    src = tmp_path / "src"
    make_synthetic_voc(src, num_train=10, num_test=2, seed=0)
    rec = [make_root(src, tmp_path / f"out{k}", "trainval", 0.3, seed=1, fold=k) for k in range(3)]
    assert [r["fold"] for r in rec] == [0, 1, 2]
    assert not set(rec[0]["val_ids"]) & set(rec[1]["val_ids"])
