"""One screen of an official rule (issue 24) on a trained workdir: retrain if needed, test, record.

    python -m bench.rules_screen --workdir /tmp/i24-screens/bccd --data /work/shared/data/bccd/BCCD \
        --name bccd_test_order --test test.order=nms_then_regress
    python -m bench.rules_screen --workdir /tmp/i24-screens/bccd --data /work/shared/data/bccd/BCCD \
        --weights /work/shared/weights/mobilenet_v2_imagenet.pth --name bccd_train_neg_iou_strict \
        --train svm.neg_iou_strict=true

Test-time rules (``--test``) are `sppnet test` overrides on the workdir's own
model: give it a copy, since the test split's proposals and conv5 maps are
cached beside the model (the next screen then skips the conv passes).
Training rules (``--train``) copy the workdir to ``<scratch>/<name>`` and run
`sppnet train` there with the config the workdir was trained with (its
train_report.json) plus the overrides: the stage keys make it reuse what the
override leaves alone (proposals, conv5, usually fine-tuning) and recompute
the rest; the record lists both. The record goes to
``<results>/<name>.json`` in the shape of bench/results/rules/raccoon_*.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from bench.checkout import checkout_env, sppnet_command
from detector.config import load_detector_config
from detector.fileio import write_json_atomic
from detector.training.train import training_stages
from bench.stamps import utc_now

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "rules"
MACHINE = "2 CPU cores, no GPU"


class ScreenError(ValueError):
    """A workdir or output this tool cannot use."""


def trained_config(workdir: Path) -> dict:
    """The full config the workdir's model was trained with (its train_report.json)."""
    report = workdir / "train_report.json"
    try:
        return json.loads(report.read_text())["config"]
    except (OSError, json.JSONDecodeError, KeyError) as e:
        raise ScreenError(f"{report}: no trained config to retrain from ({e})") from e


def sppnet(args: list[str]) -> tuple[list[str], str, float]:
    """Run `sppnet ARGS` with this checkout's package; (command, stdout, seconds). Its log goes to stderr."""
    cmd = sppnet_command(*args)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=checkout_env(), stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {done.returncode}")
    return cmd, done.stdout, time.perf_counter() - start


def retrain_copy(workdir: Path, copy: Path, data: Path, weights: str | None, overrides: list[str]) -> dict:
    """Copy ``workdir`` to ``copy`` and retrain it there with its own config plus ``overrides``."""
    if copy.exists():
        raise ScreenError(f"{copy}: exists already (a screen's copy is made fresh; remove it or pick another name)")
    cfg = trained_config(workdir)
    shutil.copytree(workdir, copy, symlinks=True)
    cfg["workdir"] = str(copy)
    cfg["data"]["root"] = str(data)
    if weights:
        cfg["backbone"]["weights"] = weights
    config_file = copy / "screen_config.yaml"
    config_file.write_text(yaml.safe_dump(cfg, sort_keys=False))
    cmd, out, seconds = sppnet(["train", "--config", str(config_file), "--no-progress", *overrides])
    summary = json.loads(out[out.index("{"):])  # train prints one JSON object after any log lines
    reused = summary["reused_stages"]
    checkpointed = [s.name for s in training_stages(load_detector_config(config_file, overrides)) if s.checkpointed]
    changed = "workdir, data.root" + (", backbone.weights" if weights else "")
    return {"train_command": " ".join(cmd), "train_overrides": " ".join(overrides),
            "train_config": f"{config_file.name}: the config of {workdir}/train_report.json with {changed} set",
            "train_wall_seconds": round(seconds, 1), "reused_stages": reused,
            "recomputed_stages": [s for s in checkpointed if s not in reused]}


def test_model(model: Path, data: Path, out: Path, split: str, overrides: list[str]) -> dict:
    """`sppnet test` of ``model`` (with and without box regression: one run reports both)."""
    if out.exists():
        raise ScreenError(f"{out}: exists already (each screen tests into a fresh folder)")
    cmd, _, seconds = sppnet(["test", "--model", str(model), "--data", str(data), "--split", split,
                              "--out", str(out), "--no-progress", "--cache-features", *overrides])
    metrics = json.loads((out / "metrics.json").read_text())
    return {"command": " ".join(cmd), "wall_seconds": round(seconds, 1), "mAP": metrics["mAP"],
            "AP": metrics["AP"], "mAP_without_bbox": metrics["without_bbox_regression"]["mAP"],
            "versions": metrics["versions"]}


def code_version() -> str:
    """'branch B @ hash' of this checkout (the code the screen ran)."""
    def git(*args):
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True).stdout.strip()
    return f"branch {git('rev-parse', '--abbrev-ref', 'HEAD')} @ {git('rev-parse', '--short', 'HEAD')}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, type=Path, help="a trained workdir (model.pt, train_report.json)")
    p.add_argument("--data", required=True, type=Path, help="dataset root")
    p.add_argument("--name", required=True, help="record name: <results>/<name>.json")
    p.add_argument("--split", default="test")
    p.add_argument("--test", nargs="*", default=[], metavar="KEY=VALUE", help="test-time overrides")
    p.add_argument("--train", nargs="*", default=[], metavar="KEY=VALUE",
                   help="training overrides: retrain a copy of the workdir with them")
    p.add_argument("--weights", help="backbone weights for the retrain (default: the trained config's path)")
    p.add_argument("--scratch", type=Path, default=Path("/tmp/i24-screens"), help="copies and test outputs")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--conditions", default="loaded (2 cores shared with other sessions and a training job)")
    p.add_argument("--model-note", default="", help="how the workdir's model was made, for the record")
    args = p.parse_args(argv)

    record_path = args.results / f"{args.name}.json"
    if record_path.exists():
        raise ScreenError(f"{record_path}: exists already (records are not overwritten)")
    workdir = args.workdir.resolve()
    trained_config(workdir)  # fail before any copy or run
    started = utc_now()
    load = os.getloadavg()[0]
    retrained = {}
    if args.train:
        retrained = retrain_copy(workdir, args.scratch.resolve() / args.name, args.data, args.weights, args.train)
        workdir = args.scratch.resolve() / args.name
    tested = test_model(workdir / "model.pt", args.data, args.scratch.resolve() / f"t_{args.name}", args.split,
                        args.test)
    cfg = trained_config(workdir)
    note = args.model_note or f"{args.workdir} ({cfg['backbone']['name']}, scales {cfg['features']['scales']})"
    record = {"screen": args.name, "command": tested.pop("command"), **({"train_command": retrained.pop(
                  "train_command")} if retrained else {}),
              "machine": MACHINE, "conditions": args.conditions,
              "load_average": {"start": round(load, 2), "end": round(os.getloadavg()[0], 2)},
              "seed": cfg["seed"], "code": code_version(),
              "model": f"copy of {note}" + (", retrained with train_overrides" if args.train else ""),
              "overrides": " ".join(args.test), **retrained, **tested, "started_utc": started}
    args.results.mkdir(parents=True, exist_ok=True)
    write_json_atomic(record_path, record)
    print(f"{args.name}: mAP {record['mAP'] * 100:.1f}, without box regression "
          f"{record['mAP_without_bbox'] * 100:.1f} -> {record_path}")
    return 0


if __name__ == "__main__":
    from detector.commands.entry import run_cli
    sys.exit(run_cli(main))
