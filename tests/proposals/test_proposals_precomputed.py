"""proposals.precomputed: R-CNN/fast-rcnn .mat files and our npz/JSON, written here and read back."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from proposals import ProposalError, load_precomputed, propose, save_precomputed_json, save_precomputed_npz
from proposals.precomputed import convert_mat_boxes


def write_rcnn_mat(path, images, boxes):
    """A .mat laid out like fast-rcnn's selective_search_data/*.mat (cell arrays)."""
    img_cell = np.empty((1, len(images)), dtype=object)
    box_cell = np.empty((1, len(boxes)), dtype=object)
    for i, (name, b) in enumerate(zip(images, boxes)):
        img_cell[0, i] = name
        box_cell[0, i] = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    scipy.io.savemat(str(path), {"images": img_cell, "boxes": box_cell})


def test_mat_conversion_by_hand():
    # (y1, x1, y2, x2) 1-based inclusive: rows 2..11, columns 5..24 (10 rows, 20 columns).
    out = convert_mat_boxes([[2, 5, 11, 24]])
    np.testing.assert_array_equal(out, [[4, 1, 24, 11]])  # x1, y1, x2, y2, width 20, height 10
    assert out.dtype == np.float32


def test_read_rcnn_mat_file(tmp_path):
    path = tmp_path / "voc_2007_test.mat"
    write_rcnn_mat(path, ["000001", "000004", "000006"],
                   [[[1, 1, 100, 200], [11, 21, 40, 60]], [[5, 6, 7, 8]], np.zeros((0, 4))])
    table = load_precomputed(path)
    assert list(table) == ["000001", "000004", "000006"]
    np.testing.assert_array_equal(table["000001"], [[0, 0, 200, 100], [20, 10, 60, 40]])
    np.testing.assert_array_equal(table["000004"], [[5, 4, 8, 7]])
    assert table["000006"].shape == (0, 4)


def test_propose_from_mat_applies_the_contract(tmp_path):
    path = tmp_path / "props.mat"
    # Duplicate, tiny and out-of-image windows: the reader keeps them, propose() cleans them.
    write_rcnn_mat(path, ["a"], [[[1, 1, 50, 50], [1, 1, 50, 50], [1, 1, 5, 5], [10, 10, 500, 500]]])
    image = np.zeros((100, 80, 3), np.uint8)
    out = propose(image, method="precomputed", path=str(path), image_id="a")
    np.testing.assert_array_equal(out, [[0, 0, 50, 50], [9, 9, 80, 100]])
    with pytest.raises(ProposalError, match="no proposals for image 'b'"):
        propose(image, method="precomputed", path=str(path), image_id="b")


def test_npz_and_json_round_trip(tmp_path):
    boxes = {"img 1": np.array([[0.5, 1, 30, 40.25], [2, 2, 9, 9]], np.float32),
             "x/y": np.zeros((0, 4), np.float32)}
    for name, save in (("b.npz", save_precomputed_npz), ("b.json", save_precomputed_json)):
        save(tmp_path / name, boxes)
        back = load_precomputed(tmp_path / name)
        assert list(back) == list(boxes)
        for k in boxes:
            np.testing.assert_array_equal(back[k], boxes[k])
            assert back[k].dtype == np.float32


def test_edited_file_is_read_again(tmp_path):
    path = tmp_path / "b.npz"
    save_precomputed_npz(path, {"a": [[0, 0, 10, 10]]})
    assert len(load_precomputed(path)["a"]) == 1
    save_precomputed_npz(path, {"a": [[0, 0, 10, 10], [1, 1, 20, 20]]})
    assert len(load_precomputed(path)["a"]) == 2


def test_bad_files_raise_naming_the_file(tmp_path):
    with pytest.raises(ProposalError, match="not found"):
        load_precomputed(tmp_path / "missing.mat")
    other = tmp_path / "other.mat"
    scipy.io.savemat(str(other), {"rects": np.zeros((2, 4))})
    with pytest.raises(ProposalError, match=r"other\.mat: no 'boxes'"):
        load_precomputed(other)
    garbage = tmp_path / "garbage.mat"
    garbage.write_bytes(b"MATLAB 5.0 MAT-file, garbage" + bytes(200))
    with pytest.raises(ProposalError, match="garbage.mat"):
        load_precomputed(garbage)
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"boxes": {"a": [[1, 2, 3, 4]]}}')
    with pytest.raises(ProposalError, match="wrong.json"):
        load_precomputed(wrong)
    shape = tmp_path / "shape.npz"
    np.savez(shape, a=np.zeros((3, 5)))
    with pytest.raises(ProposalError, match=r"shape.npz: boxes of a have shape \(3, 5\)"):
        load_precomputed(shape)
    txt = tmp_path / "boxes.txt"
    txt.write_text("1 2 3 4")
    with pytest.raises(ProposalError, match="unknown proposal file type"):
        load_precomputed(txt)
