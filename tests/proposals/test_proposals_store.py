"""proposals.store / proposals.compute: the split cache (resume, staleness, bad images, workers)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import proposals.compute as compute_mod
from detector.records import ImageRecord
from proposals import ProposalConfig, ProposalError, ProposalStore, compute_split, propose_with_config
from proposals.precomputed import save_precomputed_npz
from proposals.store import CONSOLIDATED
from helpers import load_tool

CFG = ProposalConfig(max_side=0, min_size=10.0)


def write_image(path: Path, seed: int, size=(64, 48)) -> None:
    """A small PNG (lossless, so the pixels read back exactly): noise + one flat square."""
    rng = np.random.default_rng(seed)
    w, h = size
    img = rng.integers(100, 140, size=(h, w, 3), dtype=np.uint8)
    img[10 + seed % 5:35, 12:40 + seed % 7] = (200, 50 + 20 * seed % 200, 40)
    Image.fromarray(img).save(path)


def make_records(folder: Path, n: int = 3) -> list[ImageRecord]:
    folder.mkdir(parents=True, exist_ok=True)
    recs = []
    for i in range(n):
        p = folder / f"img{i}.png"
        write_image(p, i)
        recs.append(ImageRecord(f"img{i}", p, 64, 48))
    return recs


class CountingPropose:
    """Stands in for propose_with_config in the (inline, workers=1) compute path."""

    def __init__(self, fail_after: int | None = None):
        self.calls: list[tuple] = []
        self.fail_after = fail_after

    def __call__(self, image, cfg, image_id=None):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt  # what a Ctrl-C or kill between images looks like
        self.calls.append(image.shape)
        return propose_with_config(image, cfg)


def run(records, tmp_path, cfg=CFG, **kw):
    return compute_split(records, cfg, tmp_path / "cache", "toy", "test", workers=1,
                         progress=False, **kw)


def test_store_holds_what_propose_returns(tmp_path):
    from detector.images import read_image

    recs = make_records(tmp_path / "img")
    store = run(recs, tmp_path)
    for r in recs:
        expected = propose_with_config(read_image(r.path), CFG)
        np.testing.assert_array_equal(store.load(r.image_id), expected)
    all_ = store.load_all()
    assert sorted(all_) == ["img0", "img1", "img2"]
    assert (store.root / CONSOLIDATED).is_file()
    # A fresh store object (another process) reads the same thing.
    again = ProposalStore.open(tmp_path / "cache", "toy", "test", CFG)
    assert again.root == store.root
    np.testing.assert_array_equal(again.load("img1"), all_["img1"])
    with pytest.raises(ProposalError, match="no proposals cached"):
        again.load("nope")


def test_second_run_computes_nothing(tmp_path, monkeypatch):
    recs = make_records(tmp_path / "img")
    run(recs, tmp_path)
    spy = CountingPropose()
    monkeypatch.setattr(compute_mod, "propose_with_config", spy)
    run(recs, tmp_path)
    assert spy.calls == []


def test_interrupted_run_resumes_with_only_the_missing_images(tmp_path, monkeypatch):
    recs = make_records(tmp_path / "img", n=4)
    spy = CountingPropose(fail_after=2)
    monkeypatch.setattr(compute_mod, "propose_with_config", spy)
    with pytest.raises(KeyboardInterrupt):
        run(recs, tmp_path)
    store = ProposalStore.open(tmp_path / "cache", "toy", "test", CFG)
    assert sorted(store.load_all()) == ["img0", "img1"]
    assert not (store.root / CONSOLIDATED).exists()
    assert not list(store.root.glob(".*.tmp"))  # atomic writes leave no partial files
    # A half-written entry from a hard kill (garbage bytes) is stale, not an error.
    store.entry_path("img2").write_bytes(b"PK\x03\x04 truncated")
    spy2 = CountingPropose()
    monkeypatch.setattr(compute_mod, "propose_with_config", spy2)
    store = run(recs, tmp_path)
    assert len(spy2.calls) == 2  # img2 and img3 only
    assert sorted(store.load_all()) == ["img0", "img1", "img2", "img3"]


def test_changed_image_is_recomputed(tmp_path, monkeypatch):
    recs = make_records(tmp_path / "img")
    before = run(recs, tmp_path).load("img1")
    write_image(recs[1].path, seed=7)  # new content, same name and size
    spy = CountingPropose()
    monkeypatch.setattr(compute_mod, "propose_with_config", spy)
    store = run(recs, tmp_path)
    assert len(spy.calls) == 1
    after = store.load("img1")
    assert not np.array_equal(before, after)


def test_changed_parameters_use_a_new_store(tmp_path, monkeypatch):
    recs = make_records(tmp_path / "img")
    a = run(recs, tmp_path)
    spy = CountingPropose()
    monkeypatch.setattr(compute_mod, "propose_with_config", spy)
    b = run(recs, tmp_path, cfg=dataclasses.replace(CFG, min_size=25.0))
    assert a.root != b.root and len(spy.calls) == 3
    assert all((np.minimum(v[:, 2] - v[:, 0], v[:, 3] - v[:, 1]) >= 25).all()
               for v in b.load_all().values())
    # workers does not change the boxes, so it does not change the store.
    c = ProposalStore.open(tmp_path / "cache", "toy", "test", dataclasses.replace(CFG, workers=5))
    assert c.root == a.root


def test_hand_edited_params_file_is_detected(tmp_path):
    recs = make_records(tmp_path / "img", n=1)
    store = run(recs, tmp_path)
    (store.root / "params.json").write_text('{"method": "something else"}')
    with pytest.raises(ProposalError, match="do not match"):
        run(recs, tmp_path)


def test_bad_image_fails_naming_the_file(tmp_path):
    recs = make_records(tmp_path / "img", n=2)
    bad = tmp_path / "img" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    recs.append(ImageRecord("broken", bad, 64, 48))
    with pytest.raises(ProposalError, match="broken.jpg"):
        run(recs, tmp_path)
    missing = ImageRecord("gone", tmp_path / "img" / "gone.png", 64, 48)
    with pytest.raises(ProposalError, match="gone.png"):
        run(recs[:2] + [missing], tmp_path)


def test_bad_image_skipped_with_warning_when_asked(tmp_path):
    recs = make_records(tmp_path / "img", n=2)
    bad = tmp_path / "img" / "broken.png"
    bad.write_bytes(b"not a png at all")
    recs.append(ImageRecord("broken", bad, 64, 48))
    with pytest.warns(RuntimeWarning, match="broken.png"):
        store = compute_split(recs, CFG, tmp_path / "cache", "toy", "test", progress=False,
                              skip_bad_images=True)
    assert sorted(store.load_all()) == ["img0", "img1"]


def test_parallel_workers_give_the_same_boxes(tmp_path):
    recs = make_records(tmp_path / "img", n=3)
    serial = run(recs, tmp_path).load_all()
    par = compute_split(recs, CFG, tmp_path / "cache2", "toy", "test", workers=2,
                        progress=False).load_all()
    assert sorted(par) == sorted(serial)
    for k in serial:
        np.testing.assert_array_equal(par[k], serial[k])


def test_precomputed_split_needs_no_pixels(tmp_path):
    recs = make_records(tmp_path / "img", n=2)
    path = tmp_path / "boxes.npz"
    save_precomputed_npz(path, {"img0": [[0, 0, 30, 30], [0, 0, 30, 30], [5, 5, 100, 100]],
                                "img1": [[1, 2, 3, 4]]})
    cfg = ProposalConfig(method="precomputed", path=str(path), min_size=10.0)
    store = run(recs, tmp_path, cfg=cfg)
    np.testing.assert_array_equal(store.load("img0"), [[0, 0, 30, 30], [5, 5, 64, 48]])
    assert store.load("img1").shape == (0, 4)
    # Re-exporting the file with other boxes is a new store, not stale hits.
    save_precomputed_npz(path, {"img0": [[2, 2, 40, 40]], "img1": [[0, 0, 20, 20]]})
    store2 = run(recs, tmp_path, cfg=cfg)
    assert store2.root != store.root
    np.testing.assert_array_equal(store2.load("img0"), [[2, 2, 40, 40]])


def test_propose_tool_caches_and_reports(tmp_path, capsys):
    import json

    from detector.data import make_synthetic_voc

    root = make_synthetic_voc(tmp_path / "voc", num_train=0, num_test=3, image_size=(128, 96),
                              image_format="png")
    tool = load_tool("propose")
    argv = ["--data", str(root), "--split", "test", "--cache", str(tmp_path / "cache"),
            "--workers", "1", "--report", str(tmp_path / "rep"), "--no-progress",
            "max_side=0", "proposals.min_size=10"]
    assert tool.main(argv) == 0
    data = json.loads((tmp_path / "rep" / "proposals_report.json").read_text())
    assert data["num_images"] == 3 and data["num_gt"] > 0
    # Synthetic objects are flat shapes on a plain background: selective search finds them.
    assert data["recall_at_iou"][0] >= 0.9
    assert data["params"]["min_size"] == 10.0 and data["params"]["max_side"] == 0
    assert (tmp_path / "rep" / "recall_vs_windows.png").is_file()
    stores = list((tmp_path / "cache").glob("*/test/opencv_fast-*"))
    assert len(stores) == 1 and len(list(stores[0].glob("0*.npz"))) == 3
    with pytest.raises(Exception, match="unknown key"):
        tool.main(argv[:-1] + ["colour=1"])


def test_train_max_side_picks_a_search_and_does_not_key_the_boxes():
    from proposals import ProposalConfig
    from proposals.store import cache_params

    full = ProposalConfig(max_side=0)
    both = ProposalConfig(max_side=0, train_max_side=500)
    assert full.for_training() is full
    assert both.for_training() == ProposalConfig(max_side=500)
    # The boxes are keyed by the search that made them: a test split searched with max_side 0
    # shares its cache with a config that trains on a smaller search.
    assert cache_params(both) == cache_params(full)
    assert cache_params(both.for_training()) == cache_params(ProposalConfig(max_side=500)) != cache_params(full)
    with pytest.raises(ValueError, match="train_max_side"):
        ProposalConfig(train_max_side=-2).validate()
    with pytest.raises(ValueError, match="train_max_side"):
        ProposalConfig(auto=True, train_max_side=300).validate()
