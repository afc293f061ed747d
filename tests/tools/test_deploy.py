"""`sppnet export` and the torch-free runtime (detector/deploy): equal detections, no torch, bad input."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from detector.commands import main
from detector.deploy.export import export_model
from detector.deploy.manifest import MANIFEST
from detector.deploy.runtime import load_export
from detector.images import read_image
from detector.model import load_model, load_trained

from helpers import REPO, write_noise_image, write_small_model

# What a `pip install 'sppnet[runtime]'` venv lacks: the runtime path must import none of it.
TRAIN_ONLY = ("torch", "torchvision", "sklearn", "scipy", "pycocotools", "matplotlib", "skimage",
              "selectivesearch", "onnx", "onnxscript")
BOX_TOLERANCE = 0.01  # px
SCORE_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def small_export(tmp_path_factory) -> tuple[Path, Path]:
    """(model file, export folder) of an untrained two-class detector: fast, for the error cases."""
    root = tmp_path_factory.mktemp("small")
    write_small_model(root / "model.pt")
    export_model(root / "model.pt", root / "export")
    return root / "model.pt", root / "export"


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for i in range(3):
        write_noise_image(folder / f"p{i}.png", seed=i, size=(160 + 20 * i, 120))
    return folder


def assert_same_detections(want, got, where: str = "") -> None:
    """Same detections up to the tolerances: matched by label and box, in any order among near-ties."""
    assert len(got.boxes) == len(want.boxes), where
    free = np.ones(len(got.boxes), bool)
    for box, score, label in zip(want.boxes, want.scores, want.labels):
        diff = np.abs(got.boxes - box).max(axis=1)
        diff[(got.labels != label) | ~free] = np.inf
        j = int(diff.argmin())
        assert diff[j] <= BOX_TOLERANCE, f"{where}: no runtime box within {BOX_TOLERANCE} px of {box}"
        assert abs(got.scores[j] - score) <= SCORE_TOLERANCE, f"{where}: score {got.scores[j]} vs {score}"
        free[j] = False


def test_runtime_detections_equal_torch_on_the_trained_model(trained_run, tmp_path):
    export_model(trained_run.model_path, tmp_path / "export")
    torch_detector = load_model(trained_run.model_path, device="cpu")
    runtime = load_export(tmp_path / "export")
    # The same search (both call proposals.propose_with_config with these parameters).
    assert runtime.proposals == torch_detector.proposals
    images = sorted((trained_run.data / "JPEGImages").iterdir())[-6:]
    total = 0
    for path in images:
        image = read_image(path)
        windows = torch_detector.propose(image)
        want = torch_detector.detect(image, windows)
        assert_same_detections(want, runtime.detect(image, windows), str(path))
        total += len(want.boxes)
    assert total > 0


def assert_same_on_photos(torch_detector, runtime, photos: Path) -> None:
    """Both detectors on each photo's windows: many detections (> 20), the same ones."""
    for path in sorted(photos.iterdir()):
        image = read_image(path)
        windows = torch_detector.propose(image)
        want = torch_detector.detect(image, windows)
        assert len(want.boxes) > 20
        assert_same_detections(want, runtime.detect(image, windows), str(path))


def test_runtime_equals_torch_where_windows_share_cells(small_export, photos):
    """An untrained detector scores hundreds of overlapping windows above the threshold, many
    sharing their cells (same pool5): NMS must keep the same ones on both paths."""
    model, export = small_export
    torch_detector, runtime = load_model(model, device="cpu"), load_export(export)
    assert_same_on_photos(torch_detector, runtime, photos)


def test_runtime_follows_the_official_rules_as_torch_does(small_export, photos):
    """The official SPP_net rules (issue 24) as test-time overrides: two scales chosen by the
    side rule, corner-aligned window scaling, NMS before regression; the same detections."""
    rules = ["features.scales=[96,160]", "features.scale_rule=side",
             "pool.window_scaling=corner", "pool.window_margin=0.4375", "test.order=nms_then_regress"]
    model, export = small_export
    trained, runtime = load_trained(model, overrides=rules, device="cpu"), load_export(export, rules)
    assert (runtime.pool, runtime.features) == (trained.config.pool, trained.config.features)
    assert_same_on_photos(trained.detector, runtime, photos)


def test_int8_export_quantises_the_fc_layers(trained_run, tmp_path):
    export_model(trained_run.model_path, tmp_path / "fp32")
    export_model(trained_run.model_path, tmp_path / "int8", int8=True)
    manifest = json.loads((tmp_path / "int8" / MANIFEST).read_text())
    assert manifest["head"]["precision"] == "int8"
    assert (tmp_path / "int8" / "head.onnx").stat().st_size < 0.5 * (tmp_path / "fp32" / "head.onnx").stat().st_size
    image = read_image(sorted((trained_run.data / "JPEGImages").iterdir())[-1])
    fp32, int8 = load_export(tmp_path / "fp32"), load_export(tmp_path / "int8")
    windows = fp32.propose(image)
    maps = fp32.conv_maps(image, fp32._graphs(1)[0])
    pooled = fp32.pool5(maps, windows, min(image.shape[:2]))
    scores32 = fp32._graphs(1)[1].run(["scores"], {"pool5": pooled})[0]
    scores8 = int8._graphs(1)[1].run(["scores"], {"pool5": pooled})[0]
    assert not np.array_equal(scores8, scores32)
    assert np.corrcoef(scores8.ravel(), scores32.ravel())[0, 1] > 0.99


def test_export_and_detect_commands_give_torch_results(trained_run, tmp_path, capsys):
    """`sppnet export` then `sppnet detect --model EXPORT` (a pipelined folder run with --save-voc and
    --save-coco) writes what `sppnet detect --model model.pt` writes, up to the tolerances."""
    images = tmp_path / "images"
    images.mkdir()
    for path in sorted((trained_run.data / "JPEGImages").iterdir())[-3:]:
        shutil.copy(path, images / path.name)
    assert main(["export", "--model", str(trained_run.model_path), "--out", str(tmp_path / "export")]) == 0
    runs = {}
    for name, model in (("torch", trained_run.model_path), ("runtime", tmp_path / "export")):
        out = tmp_path / name
        assert main(["detect", "--model", str(model), "--input", str(images), "--output", str(out),
                     "--save-voc", "--save-coco", "--no-progress"]) == 0
        runs[name] = json.loads((out / "results.json").read_text())
        assert len((out / "results.jsonl").read_text().splitlines()) == 3
        assert len(list((out / "voc" / "Annotations").glob("*.xml"))) == 3
        assert len(list(out.glob("*_det.jpg"))) == 3
    capsys.readouterr()
    coco = [json.loads((tmp_path / n / "coco_results.json").read_text()) for n in runs]
    assert len(coco[0]) == len(coco[1]) > 0
    for want, got in zip(runs["torch"]["images"], runs["runtime"]["images"]):
        assert want["file"] == got["file"] and len(want["detections"]) == len(got["detections"])
        for a, b in zip(want["detections"], got["detections"]):  # rounded to 0.01 px and 1e-5 in the file
            assert a["class"] == b["class"]
            assert np.abs(np.subtract(a["box"], b["box"])).max() <= BOX_TOLERANCE + 0.01
            assert abs(a["score"] - b["score"]) <= SCORE_TOLERANCE + 1e-5


BLOCKER = textwrap.dedent("""
    # Installed by tests/tools/test_deploy.py: in every Python process of the run (the
    # pipelined run's search workers too) these packages behave as if not installed.
    import sys
    BLOCKED = {blocked!r}

    class _NotInstalled:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
            return None

    sys.meta_path.insert(0, _NotInstalled())
""")


def run_without_train_packages(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """`sppnet ARGS` in a process (and its children) where torch and the other training
    packages cannot be imported; prints the blocked modules that were imported anyway."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCKER.format(blocked=set(TRAIN_ONLY)))
    code = ("import sys\nfrom detector.commands import main\nrc = main(sys.argv[1:])\n"
            f"print('imported:', sorted(m for m in sys.modules if m.split('.')[0] in {set(TRAIN_ONLY)!r}))\n"
            "sys.exit(rc)")
    env = {**__import__("os").environ, "PYTHONPATH": f"{site}:{REPO}"}
    return subprocess.run([sys.executable, "-c", code, *args], text=True, capture_output=True, timeout=300,
                          cwd=REPO, env=env)


def test_runtime_detect_never_imports_torch(small_export, photos, tmp_path):
    _, export = small_export
    out = tmp_path / "out"
    res = run_without_train_packages(tmp_path, "detect", "--model", str(export), "--input", str(photos),
                                     "--output", str(out), "--save-voc", "--save-coco", "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "imported: []" in res.stdout
    summary = json.loads((out / "results.json").read_text())
    assert len(summary["images"]) == 3 and not summary["skipped"]  # a worker that needed torch would fail


def test_the_blocker_does_block_torch(small_export, photos, tmp_path):
    """The check above can fail: the model file (torch) path under the same blocker stops with the
    one-line error that names the extra to install."""
    model, _ = small_export
    res = run_without_train_packages(tmp_path, "detect", "--model", str(model), "--input", str(photos),
                                     "--output", str(tmp_path / "o"))
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1] == ("error: sppnet detect needs torch, which is not installed: "
                                                   "pip install 'sppnet[train]'")
    assert "Traceback" not in res.stderr
    res = run_without_train_packages(tmp_path, "train", "--config", "configs/demo.yaml")
    assert res.returncode == 2 and "pip install 'sppnet[train]'" in res.stderr and "Traceback" not in res.stderr


def broken_copy(export: Path, tmp_path: Path, change) -> Path:
    """A copy of the export folder with ``change(folder, manifest dict)`` applied."""
    folder = tmp_path / "broken"
    shutil.copytree(export, folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    change(folder, manifest)
    if (folder / MANIFEST).exists():
        (folder / MANIFEST).write_text(json.dumps(manifest))
    return folder


def _set(section: str, key: str, value):
    def change(folder, manifest):
        if section:
            manifest[section][key] = value
        else:
            manifest[key] = value
    return change


BAD_FOLDERS = {
    "not an export folder": (lambda f, m: (f / MANIFEST).unlink(), "not an sppnet export folder (no manifest.json"),
    "a file missing": (lambda f, m: (f / "head.onnx").unlink(), "head.onnx: missing from the export folder"),
    "a newer format": (_set("", "format_version", 2), "export format version 2 is not supported"),
    "another mapping rule": (_set("mapping", "version", 1), "trained with window-mapping rule 1"),
    "a changed graph": (lambda f, m: (f / "trunk.onnx").open("ab").write(b"x"), "trunk.onnx: changed since the export"),
    "another format": (_set("", "format", "yolo"), "not an sppnet export manifest"),
}


@pytest.mark.parametrize("case", BAD_FOLDERS)
def test_bad_export_folders_are_one_line_errors(case, small_export, photos, tmp_path, capsys):
    change, expect = BAD_FOLDERS[case]
    folder = broken_copy(small_export[1], tmp_path, change)
    assert main(["detect", "--model", str(folder), "--input", str(photos), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and expect in err[0], err


@pytest.mark.parametrize("argv, expect", [
    (["test.scorer=softmax"], "test.scorer cannot change on an export folder"),
    (["test.fc_compression=int8"], "sppnet export --int8"),
    (["backbone.name=zf5"], "backbone cannot change at test time"),
    (["--device", "cuda"], "an export folder runs on the CPU"),
])
def test_runtime_options_it_cannot_honour_are_errors(argv, expect, small_export, photos, tmp_path, capsys):
    rc = main(["detect", "--model", str(small_export[1]), "--input", str(photos), "--output", str(tmp_path / "o"),
               *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and expect in err[0], err


def test_runtime_honours_test_time_overrides(small_export, photos):
    image = read_image(photos / "p0.png")
    loose, strict = load_export(small_export[1]), load_export(small_export[1], ["test.score_threshold=2.0"])
    windows = loose.propose(image)
    assert len(strict.detect(image, windows).boxes) < len(loose.detect(image, windows).boxes)


def test_export_refuses_a_model_of_another_mapping_rule(small_export, tmp_path, capsys):
    state = torch.load(small_export[0], weights_only=True)
    state["mapping_version"] = 1
    torch.save(state, tmp_path / "old.pt")
    assert main(["export", "--model", str(tmp_path / "old.pt"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trained with window-mapping rule 1" in err[0] and "retrain" in err[0], err
