"""Ids and file names from a dataset or a folder of photos never reach outside their folder
(issue 25 item 1), through the command-line tools: a downloaded dataset is untrusted input."""
from __future__ import annotations

import json
import shutil

import pytest
from helpers import write_noise_image, write_small_model

from detector.commands import main
from detector.data import load_dataset, make_synthetic_voc, voc_to_coco_dict


@pytest.fixture
def voc(tmp_path):
    return make_synthetic_voc(tmp_path / "sets" / "data", num_train=3, num_test=1, seed=3)


def test_split_id_leaving_the_dataset_is_an_error(voc, capsys):
    # Before: Annotations/../../secret.xml was read (a valid annotation there) and stats exited 0.
    shutil.copy(voc / "Annotations" / "000000.xml", voc.parent / "secret.xml")
    split = voc / "ImageSets" / "Main" / "trainval.txt"
    split.write_text("000000\n000001\n\n../secret\n")
    assert main(["stats", "--data", str(voc), "--split", "trainval"]) == 2
    assert (f"{split}: line 4: image id '../secret' holds a path separator; an id is a file name"
            in capsys.readouterr().err)


@pytest.mark.parametrize("bad", ["..", "sub\\..\\..\\secret", "/etc/passwd"])
def test_every_bad_split_line_is_named_once(voc, capsys, bad):
    split = voc / "ImageSets" / "Main" / "test.txt"
    split.write_text(f"{bad}\n000003\n{bad} 1\n")  # a per-class file's "<id> <flag>" too
    # evaluate reads the annotations only: the check does not depend on the images.
    assert main(["evaluate", "--data", str(voc), "--split", "test", "--detections", str(voc / "none.json"),
                 "--out", str(voc.parent / "e")]) == 2
    err = capsys.readouterr().err
    assert f"{split}: 2 invalid image ids:\n  line 1: image id {bad!r}" in err and "\n  line 3: " in err


def _coco_stats(voc, file_name: str) -> int:
    """stats on a COCO file of the generated images, the first image's file_name replaced."""
    d = voc_to_coco_dict(load_dataset(voc, "trainval"))
    for im in d["images"]:
        im["file_name"] = f"JPEGImages/{im['file_name']}"  # a subfolder of the image folder: fine
    d["images"][0]["file_name"] = file_name
    (voc / "coco.json").write_text(json.dumps(d))
    return main(["stats", "--data", str(voc), "--split", "x", "--format", "coco", "--annotations", "coco.json"])


@pytest.mark.parametrize("file_name, problem", [
    ("../secret.jpg", "holds '..'"), ("JPEGImages/../../secret.jpg", "holds '..'"),
    ("{voc}/JPEGImages/000000.jpg", "is an absolute path"), ("JPEGImages\\..\\..\\secret.jpg", "holds '..'"),
])
def test_coco_file_name_outside_the_image_folder_is_an_error(voc, capsys, file_name, problem):
    shutil.copy(voc / "JPEGImages" / "000000.jpg", voc.parent / "secret.jpg")
    file_name = file_name.format(voc=voc)
    assert _coco_stats(voc, file_name) == 2
    assert (f"{voc / 'coco.json'}: 1 invalid COCO entries:\n  images[0] (id 1): file_name {file_name!r} "
            f"{problem}; it must lie inside the image folder") in capsys.readouterr().err


def test_coco_file_name_in_a_subfolder_is_fine(voc, capsys):
    assert _coco_stats(voc, "JPEGImages/000000.jpg") == 0
    assert "images checked: 3, unreadable: 0" in capsys.readouterr().out


def test_detect_names_every_output_inside_its_folder(tmp_path, capsys):
    """detect's ids come from the user's own file names: odd ones are made plain, not refused,
    and the pseudo-label folder they go to is a dataset the VOC loader reads."""
    photos = tmp_path / "photos"
    for name in ("...jpg", "a\\b.jpg", "sub1/c.jpg", "sub2/c.jpg", "c_2.jpg"):
        (photos / name).parent.mkdir(parents=True, exist_ok=True)
        write_noise_image(photos / "x.jpg").rename(photos / name)  # PIL takes "...jpg" for no extension
    listing = photos / "list.txt"  # a list: a folder listing would leave out "...jpg" as hidden
    listing.write_text("...jpg\na\\b.jpg\nsub1/c.jpg\nsub2/c.jpg\nc_2.jpg\n")
    write_small_model(tmp_path / "m.pt", with_regressors=False)
    out = tmp_path / "out"
    assert main(["detect", "--model", str(tmp_path / "m.pt"), "--input", str(listing), "--output", str(out),
                 "--save-voc", "--no-progress", "proposals.workers=1"]) == 0
    ids = ["__", "a_b", "c", "c_2", "c_2_2"]
    assert (out / "voc" / "ImageSets" / "Main" / "trainval.txt").read_text().split() == ids
    drawn = [f"{i}_jpg_det.jpg" for i in ids]  # sub1/c.jpg and sub2/c.jpg no longer share one
    assert sorted(p.name for p in out.glob("*_det.jpg")) == sorted(drawn)
    assert sorted(p.name for p in (out / "voc" / "Annotations").iterdir()) == sorted(f"{i}.xml" for i in ids)
    assert not list(tmp_path.glob("*.xml")) and not list(photos.rglob("*.xml"))
    capsys.readouterr()
    assert main(["stats", "--data", str(out / "voc"), "--split", "trainval"]) == 0
    assert "images checked: 5, unreadable: 0" in capsys.readouterr().out
