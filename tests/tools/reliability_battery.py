"""The user's-path battery: every bad input and reused-workdir case of issue #11, run
through the command-line tools in-process on generated data, with what the user sees.

    .venv/bin/python tests/tools/reliability_battery.py      # rewrites docs/reliability.md

``tests/tools/test_reliability.py`` runs the same cases and checks each outcome, so
the table in docs/reliability.md is what the code does.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image

REPO = Path(__file__).resolve().parents[2]
# The package and tests/helpers.py, when this file runs as a script.
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from helpers import load_tool  # noqa: E402
# Small enough to train in seconds on 2 cores, big enough to detect the shapes.
TINY = ["backbone.name=tiny", "features.scales=[192]", "finetune.hidden=64", "finetune.iterations=40",
        "finetune.resample_every=20",
        "finetune.bank_bg_per_image=16", "proposals.max_windows=60", "proposals.workers=1",
        "svm.initial_negatives=30"]


@dataclass(frozen=True)
class Outcome:
    code: int
    text: str  # stderr and log lines

    def line(self, needle: str = "") -> str:
        """The first line holding ``needle`` (the first line of output without one)."""
        lines = [ln.strip() for ln in self.text.splitlines() if ln.strip()]
        hits = [ln for ln in lines if needle in ln] if needle else lines
        return (hits or [""])[0]


@dataclass(frozen=True)
class Case:
    group: str
    name: str
    run: Callable[[Path], Outcome]
    code: int  # the exit code the user must get
    expect: str  # a phrase the user must see




def run_tool(name: str, *argv) -> Outcome:
    """Run tools/<name>.py's main through run_cli, capturing stderr and the log."""
    from detector.commands.entry import run_cli

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    out = io.StringIO()
    try:
        with contextlib.redirect_stderr(stream), contextlib.redirect_stdout(out):
            code = run_cli(lambda: load_tool(name).main([str(a) for a in argv]))
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    return Outcome(code, stream.getvalue() + out.getvalue())


# -- data -------------------------------------------------------------------------------------

def voc(tmp: Path, train: int = 10, test: int = 4, seed: int = 3) -> Path:
    from detector.data import make_synthetic_voc
    return make_synthetic_voc(tmp / "data", num_train=train, num_test=test, seed=seed)


def train_args(data: Path, workdir: Path, *extra) -> list:
    return ["--no-progress", f"data.root={data}", f"workdir={workdir}", *TINY, *extra]


_TEMPLATES: dict[str, Path] = {}


def trained(tmp: Path, without: str = "") -> tuple[Path, Path]:
    """A tiny model trained on generated data, copied into ``tmp``: (data root, model path).

    Trained once per process and copied (data, caches, stages, model), so
    each case starts from the same finished run in its own folder. ``without``:
    a class whose objects are deleted from the training split first, so the
    model does not know it (the test split keeps them).
    """
    import atexit
    import tempfile
    if without not in _TEMPLATES:
        template = Path(tempfile.mkdtemp(prefix="reliability-"))
        atexit.register(shutil.rmtree, template, True)
        data = voc(template)
        if without:
            assert remove_class(data, "trainval", without)
        out = run_tool("train", *train_args(data, template / "run"))
        assert out.code == 0, out.text
        _TEMPLATES[without] = template
    for name in ("data", "run"):
        shutil.copytree(_TEMPLATES[without] / name, tmp / name)
    return tmp / "data", tmp / "run" / "model.pt"


def split_ids(data: Path, split: str) -> list[str]:
    return (data / "ImageSets" / "Main" / f"{split}.txt").read_text().split()


def edit_xml(data: Path, image_id: str, old: str, new: str, count: int = 1) -> None:
    path = data / "Annotations" / f"{image_id}.xml"
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, count))


def remove_class(data: Path, split: str, name: str) -> int:
    """Delete every object of class ``name`` from the split's annotations; returns how many."""
    one = re.compile(rf"\s*<object>\s*<name>{re.escape(name)}</name>.*?</object>", re.S)
    removed = 0
    for i in split_ids(data, split):
        path = data / "Annotations" / f"{i}.xml"
        text, n = one.subn("", path.read_text())
        path.write_text(text)
        removed += n
    return removed


def coco_json(tmp: Path, mutate: Callable[[dict], None]) -> Path:
    """A valid COCO file of 3 generated images, then ``mutate`` applied to it."""
    from detector.data import load_dataset, voc_to_coco_dict
    data = voc(tmp, train=3, test=1)
    d = voc_to_coco_dict(load_dataset(data, "trainval"))
    for im in d["images"]:
        im["file_name"] = f"JPEGImages/{im['file_name']}"
    mutate(d)
    path = tmp / "coco.json"
    path.write_text(json.dumps(d))
    return path


def coco_stats(tmp: Path, mutate) -> Outcome:
    path = coco_json(tmp, mutate)
    return run_tool("dataset_stats", "--data", tmp / "data", "--split", "x", "--format", "coco",
                    "--annotations", path.relative_to(tmp / "data") if False else f"../{path.name}")


# -- cases ------------------------------------------------------------------------------------

def stale_moved_box(tmp: Path) -> Outcome:
    data, _ = trained(tmp)
    first = split_ids(data, "trainval")[0]
    xml = (data / "Annotations" / f"{first}.xml").read_text()
    xmin = xml.split("<xmin>")[1].split("</xmin>")[0]
    edit_xml(data, first, f"<xmin>{xmin}</xmin>", f"<xmin>{int(xmin) + 3}</xmin>")
    return run_tool("train", *train_args(data, tmp / "run"))


def stale_other_dataset(tmp: Path) -> Outcome:
    data, _ = trained(tmp)
    shutil.rmtree(data)
    voc(tmp, seed=4)  # same ids and classes, other images and boxes
    return run_tool("train", *train_args(data, tmp / "run"))


def runtime_field_reuses(tmp: Path) -> Outcome:
    data, _ = trained(tmp)
    return run_tool("train", *train_args(data, tmp / "run", "proposals.workers=2", "device=cpu"))


def resized_test_images(tmp: Path) -> Outcome:
    data, model = trained(tmp)
    for i in split_ids(data, "test"):
        p = data / "JPEGImages" / f"{i}.jpg"
        im = Image.open(p)
        im.resize((im.width * 2, im.height * 2)).save(p)
    return run_tool("test", "--model", model, "--data", data, "--split", "test", "--out", tmp / "t", "--no-progress")


def exif_rotated(tmp: Path) -> Outcome:
    data = voc(tmp, train=3, test=1)
    first = split_ids(data, "trainval")[0]
    p = data / "JPEGImages" / f"{first}.jpg"
    im = Image.open(p)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 on display
    im.save(p, exif=exif.tobytes())
    return run_tool("dataset_stats", "--data", data, "--split", "trainval")


def truncated_jpeg_in_training(tmp: Path, *extra) -> Outcome:
    data = voc(tmp)
    p = data / "JPEGImages" / f"{split_ids(data, 'trainval')[2]}.jpg"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    return run_tool("train", *train_args(data, tmp / "run", *extra))


def broken_xml_files(tmp: Path) -> Outcome:
    data = voc(tmp)
    ids = split_ids(data, "trainval")
    (data / "Annotations" / f"{ids[0]}.xml").write_text("")
    (data / "Annotations" / f"{ids[1]}.xml").write_text("<annotation><object>")
    edit_xml(data, ids[2], "<name>", "<name>zebra_", 1)
    edit_xml(data, ids[3], "<xmax>", "<xmax>-", 1)
    edit_xml(data, ids[4], "<ymin>", "<ymin>nan", 1)
    return run_tool("train", *train_args(data, tmp / "run", "data.class_names=[circle,square,triangle]"))


def nan_box(tmp: Path) -> Outcome:
    data = voc(tmp)
    xml = (data / "Annotations" / f"{split_ids(data, 'trainval')[0]}.xml").read_text()
    ymin = xml.split("<ymin>")[1].split("</ymin>")[0]
    edit_xml(data, split_ids(data, "trainval")[0], f"<ymin>{ymin}</ymin>", "<ymin>nan</ymin>")
    return run_tool("train", *train_args(data, tmp / "run"))


def no_objects(tmp: Path) -> Outcome:
    data = voc(tmp, train=3, test=1)
    for i in split_ids(data, "trainval"):
        path = data / "Annotations" / f"{i}.xml"
        text = path.read_text()
        path.write_text(text[: text.index("<object>")] + "</annotation>\n")
    return run_tool("train", *train_args(data, tmp / "run"))


def wrong_weights(tmp: Path) -> Outcome:
    data = voc(tmp, train=3, test=1)
    return run_tool("train", *train_args(data, tmp / "run", "backbone.weights=/no/such/weights.pth"))


def unreachable_ray(tmp: Path) -> Outcome:
    import socket

    data = voc(tmp, train=3, test=1)
    with socket.socket() as sock:  # a port nothing listens on once this closes
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return run_tool("train", *train_args(data, tmp / "run"), "--backend", "ray",
                    "--ray-address", f"127.0.0.1:{port}")


def out_is_a_file(tmp: Path) -> Outcome:
    data, model = trained(tmp)
    (tmp / "t").write_text("a file")
    return run_tool("test", "--model", model, "--data", data, "--split", "test", "--out", tmp / "t", "--no-progress")


def disk_full(tmp: Path) -> Outcome:
    import detector.fileio as fileio
    data, model = trained(tmp)
    real = fileio._free_bytes
    fileio._free_bytes = lambda path: 10 * 1024 * 1024
    try:
        return run_tool("detect", "--model", model, "--input", data / "JPEGImages", "--output", tmp / "d",
                        "--no-progress")
    finally:
        fileio._free_bytes = real


def truncated_cache_entry(tmp: Path) -> Outcome:
    data, _ = trained(tmp)
    entry = next((tmp / "run" / "cache" / "conv5").rglob("*.npz"))
    entry.write_bytes(entry.read_bytes()[:100])
    (entry.parent / f".{entry.name}.999999.abcd.tmp").write_bytes(b"left by a killed run")
    for stage in (tmp / "run" / "stages").glob("*.pt"):
        stage.unlink()  # force the stages to read the cache again
    return run_tool("train", *train_args(data, tmp / "run"))


def cuda_model_on_cpu(tmp: Path) -> Outcome:
    import torch
    data, model = trained(tmp)
    state = torch.load(model, weights_only=True)
    state["config"]["device"] = "cuda"
    torch.save(state, model)
    return run_tool("test", "--model", model, "--data", data, "--split", "test", "--out", tmp / "t", "--no-progress",
                    "--device", "cpu")


def yaml_float(tmp: Path) -> Outcome:
    cfg = tmp / "c.yaml"
    cfg.write_text("finetune:\n  lr: 1e-3\n")
    data = voc(tmp, train=3, test=1)
    return run_tool("train", "--config", cfg, *train_args(data, tmp / "run", "finetune.lr=2e-3"))


def unknown_cli_key(tmp: Path) -> Outcome:
    cfg = tmp / "c.yaml"
    cfg.write_text("finetune:\n  lr: 0.001\n")
    return run_tool("train", "--config", cfg, "finetune.lrr=0.1")


def pickled_model(tmp: Path) -> Outcome:
    import pickle
    import warnings
    path = tmp / "evil.pt"
    path.write_bytes(pickle.dumps({"format": "sppnet-detector", "x": Outcome(0, "")}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's note on the pickle protocol
        return run_tool("detect", "--model", path, "--input", tmp, "--output", tmp / "d")


def evaluate_without_images(tmp: Path) -> Outcome:
    data, model = trained(tmp)
    out = run_tool("test", "--model", model, "--data", data, "--split", "test", "--out", tmp / "t", "--no-progress")
    assert out.code == 0, out.text
    shutil.rmtree(data / "JPEGImages")
    return run_tool("evaluate", "--data", data, "--split", "test", "--detections", tmp / "t" / "voc",
                    "--out", tmp / "e")


def relative_cache(tmp: Path) -> Outcome:
    import os
    data, model = trained(tmp)
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    cwd = os.getcwd()
    os.chdir(elsewhere)
    try:
        out = run_tool("test", "--model", model, "--data", data, "--split", "test", "--out", tmp / "t", "--no-progress")
    finally:
        os.chdir(cwd)
    created = sorted(p.name for p in elsewhere.iterdir())
    return Outcome(out.code, out.text + f"\nfiles created in the current folder: {created or 'none'}")


def test_overrides(tmp: Path) -> Outcome:
    data, model = trained(tmp)
    out = run_tool("test", "--model", model, "--data", data, "--split", "test", "--out", tmp / "t", "--no-progress",
                   "test.nms_iou=0.4", "backbone.name=zf5")
    return out


def missing_comp4_class(tmp: Path) -> Outcome:
    data, model = trained(tmp)
    out = run_tool("test", "--model", model, "--data", data, "--split", "test", "--out", tmp / "t", "--no-progress")
    assert out.code == 0, out.text
    next((tmp / "t" / "voc").glob("*circle.txt")).unlink()
    return run_tool("evaluate", "--data", data, "--split", "test", "--detections", tmp / "t" / "voc",
                    "--out", tmp / "e")


def empty_detections(tmp: Path) -> Outcome:
    data = voc(tmp, train=3, test=2)
    (tmp / "dets.json").write_text("[]")
    return run_tool("evaluate", "--data", data, "--split", "test", "--detections", tmp / "dets.json",
                    "--out", tmp / "e")


def negative_width_detection(tmp: Path) -> Outcome:
    data = voc(tmp, train=3, test=2)
    (tmp / "dets.json").write_text(json.dumps([{"image_id": 1, "category_id": 1, "score": 0.9,
                                                "bbox": [50, 40, -20, 30]}]))
    return run_tool("evaluate", "--data", data, "--split", "test", "--detections", tmp / "dets.json",
                    "--out", tmp / "e")


def split_id_outside(tmp: Path) -> Outcome:
    data = voc(tmp, train=3, test=1)
    shutil.copy(data / "Annotations" / f"{split_ids(data, 'trainval')[0]}.xml", tmp / "secret.xml")
    split = data / "ImageSets" / "Main" / "trainval.txt"
    split.write_text(split.read_text() + "../../secret\n")  # Annotations/../../secret.xml is tmp's
    return run_tool("dataset_stats", "--data", data, "--split", "trainval")


def odd_photo_names(tmp: Path) -> Outcome:
    """detect --save-voc on photos named ...jpg, sub1/c.jpg and sub2/c.jpg, then stats on its VOC folder."""
    data, model = trained(tmp)
    photos = tmp / "photos"
    for name, image_id in zip(("...jpg", "sub1/c.jpg", "sub2/c.jpg"), split_ids(data, "test")):
        (photos / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(data / "JPEGImages" / f"{image_id}.jpg", photos / name)
    (photos / "list.txt").write_text("...jpg\nsub1/c.jpg\nsub2/c.jpg\n")
    out = run_tool("detect", "--model", model, "--input", photos / "list.txt", "--output", tmp / "d",
                   "--save-voc", "--no-progress")
    assert out.code == 0, out.text
    ids = (tmp / "d" / "voc" / "ImageSets" / "Main" / "trainval.txt").read_text().split()
    stats = run_tool("dataset_stats", "--data", tmp / "d" / "voc", "--split", "trainval")
    return Outcome(stats.code, stats.text + f"\nids: {' '.join(ids)}")


def intermixed_overrides(tmp: Path) -> Outcome:
    data, _ = trained(tmp)
    return run_tool("train", f"data.root={data}", "--no-progress", f"workdir={tmp / 'run'}", *TINY)



def class_not_in_model(tmp: Path) -> Outcome:
    data, model = trained(tmp, without="circle")
    return run_tool("test", "--model", model, "--data", data, "--split", "test", "--out", tmp / "t", "--no-progress")


def no_class_in_model(tmp: Path) -> Outcome:
    data, model = trained(tmp, without="circle")
    for i in split_ids(data, "test"):  # every test object becomes a circle
        path = data / "Annotations" / f"{i}.xml"
        path.write_text(re.sub(r"<name>\w+</name>", "<name>circle</name>", path.read_text()))
    return run_tool("test", "--model", model, "--data", data, "--split", "test", "--out", tmp / "t", "--no-progress")


def _file_name_outside(d):
    d["images"][0]["file_name"] = "../../secret.jpg"


def _drop_name(d):
    del d["categories"][0]["name"]


def _nan_bbox(d):
    d["annotations"][0]["bbox"][2] = float("nan")


def _string_image_id(d):
    d["annotations"][0]["image_id"] = str(d["annotations"][0]["image_id"])


def _bad_width(d):
    d["images"][0]["width"] = "abc"


CASES = [
    Case("Silent wrong results", "Reused workdir, one box moved in one XML", stale_moved_box, 0,
         "changed: training data: 1 changed image(s)"),
    Case("Silent wrong results", "Reused workdir, another dataset with the same ids and classes",
         stale_other_dataset, 0, "changed image(s)"),
    Case("Silent wrong results", "Reused workdir, only runtime fields changed (workers, device)",
         runtime_field_reuses, 0, "reused"),
    Case("Silent wrong results", "Test images resized 2x after annotation", resized_test_images, 2,
         "differ in size from their annotation"),
    Case("Silent wrong results", "EXIF-rotated photo, XML size of the stored pixels", exif_rotated, 2,
         "EXIF orientation"),
    Case("Silent wrong results", "COCO bbox with NaN", lambda t: coco_stats(t, _nan_bbox), 2,
         "not four finite numbers"),
    Case("Silent wrong results", "COCO annotation whose image_id is a string",
         lambda t: coco_stats(t, _string_image_id), 2, "is a string"),
    Case("Silent wrong results", "COCO category without a name", lambda t: coco_stats(t, _drop_name), 2,
         "no 'name'"),
    Case("Silent wrong results", "COCO image with width \"abc\"", lambda t: coco_stats(t, _bad_width), 2,
         "is not a size in pixels"),
    Case("Silent wrong results", "Detections: a COCO result box with negative width",
         negative_width_detection, 2, "negative width or height"),
    Case("Silent wrong results", "Detections: comp4 folder missing one class's file", missing_comp4_class, 0,
         "no result file for class(es) circle"),
    Case("Silent wrong results", "Detections: an empty list", empty_detections, 0, "no detections at all"),
    Case("Silent wrong results", "ImageSets id ../../secret (a file outside the dataset)", split_id_outside, 2,
         "line 4: image id '../../secret' holds a path separator"),
    Case("Silent wrong results", "COCO file_name ../../secret.jpg", lambda t: coco_stats(t, _file_name_outside), 2,
         "it must lie inside the image folder"),
    Case("Silent wrong results", "detect --save-voc on photos ...jpg, sub1/c.jpg, sub2/c.jpg", odd_photo_names, 0,
         "ids: __ c c_2"),
    Case("Dead ends", "Truncated JPEG in the training split (default)", truncated_jpeg_in_training, 0,
         "skipping 1 unreadable image"),
    Case("Dead ends", "Truncated JPEG with data.strict_images=true",
         lambda t: truncated_jpeg_in_training(t, "data.strict_images=true"), 2, "unreadable image(s)"),
    Case("Dead ends", "Five broken annotation files in one split", broken_xml_files, 2,
         "5 invalid annotation files"),
    Case("Dead ends", "Test split with a class the model was not trained on", class_not_in_model, 0,
         "not in the model are left out: circle"),
    Case("Dead ends", "Test split with none of the model's classes", no_class_in_model, 2,
         "has no object of a class in the model"),
    Case("Dead ends", "test.py with key=value overrides (a training-only key refused)", test_overrides, 2,
         "backbone cannot change at test time"),
    Case("Failing late", "test.py --out is an existing file", out_is_a_file, 2, "exists and is a file"),
    Case("Failing late", "detect.py on a full disk", disk_full, 2, "MB free on its disk"),
    Case("Failing late", "Wrong backbone.weights path", wrong_weights, 2, "no such weights file"),
    Case("Failing late", "Training split with no objects", no_objects, 2, "has no objects"),
    Case("Failing late", "train --backend ray, cluster address nothing listens on", unreachable_ray, 2,
         "cannot reach the Ray cluster"),
    Case("Failing late", "NaN coordinate in an XML box", nan_box, 2, "not a finite number"),
    Case("Failing late", "Truncated conv5 cache entry and a killed run's .tmp file", truncated_cache_entry, 0,
         "unreadable cache entry"),
    Case("Failing late", "Model trained with device: cuda, tested on a CPU", cuda_model_on_cpu, 0,
         "seconds per image"),
    Case("Small ones", "finetune.lr: 1e-3 in YAML and finetune.lr=2e-3 on the command line", yaml_float, 0,
         '"model":'),
    Case("Small ones", "Unknown key on the command line", unknown_cli_key, 2, "command line"),
    Case("Small ones", "train data.root=D --no-progress workdir=W (overrides after an option)", intermixed_overrides,
         0, "reused"),
    Case("Small ones", "Model file holding pickled code", pickled_model, 2, "not loaded"),
    Case("Small ones", "evaluate.py without the JPEGs", evaluate_without_images, 0, "mean"),
    Case("Small ones", "test.py run from another folder (model's workdir is relative)", relative_cache, 0,
         "files created in the current folder: none"),
]


def run_case(case: Case, tmp: Path) -> Outcome:
    tmp.mkdir(parents=True, exist_ok=True)
    return case.run(tmp)


def write_docs(path: Path = REPO / "docs" / "reliability.md") -> None:
    import tempfile
    rows = []
    for case in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            out = run_case(case, Path(tmp))
        ok = out.code == case.code and case.expect in out.text
        shown = out.line(case.expect).replace(tmp, "<tmp>").replace("|", "\\|")
        rows.append(f"| {case.group} | {case.name} | {out.code} | {shown[:220]} | {'yes' if ok else 'NO'} |")
        print(rows[-1], file=sys.stderr)
    text = ["# Reliability: what a user sees off the happy path", "",
            "Every case of issue #11, run through the command-line tools on generated data by",
            "`tests/tools/reliability_battery.py` (which wrote this page: `.venv/bin/python tests/tools/reliability_battery.py`);",
            "`tests/tools/test_reliability.py` runs the same cases and checks the exit code and the message.",
            "Exit code 0: the run completed (with the warning shown); 2: one clear error, nothing processed.",
            "", "| kind | case | exit | what the user sees (first relevant line) | as expected |",
            "|---|---|---|---|---|", *rows, ""]
    path.write_text("\n".join(text))


if __name__ == "__main__":
    write_docs()
