"""``sppnet``: one command-line entry point with a subcommand per tool.

    sppnet train --config configs/raccoon_mobilenet.yaml data.root=/data/mine workdir=runs/mine
    sppnet test --model runs/mine/model.pt --split test --out runs/mine/test

Each subcommand is a module here with ``main(argv, prog) -> int``; the files
in ``tools/`` are wrappers around the same functions. Each parses with
``parse_intermixed_args``: options and ``key=value`` overrides in any order
(plain ``parse_args`` stops collecting overrides at the first option). Exit codes: 0 ok,
2 bad input (argparse usage errors and the user errors of
:func:`detector.commands.entry.run_cli`), 130 interrupted; ``stats`` also exits 1 when
some images are unreadable.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib import import_module

from detector.hugepages import enable_huge_pages

enable_huge_pages()  # before torch loads (it reads the variable once)

from detector.commands.entry import run_cli  # noqa: E402

PROG = "sppnet"
EXIT_BAD_INPUT = 2


@dataclass(frozen=True)
class Command:
    module: str  # imported only when the command runs: `sppnet --help` needs no torch
    summary: str
    example: str


# The optional dependencies, by the extra that installs them (setup.cfg): a
# command that needs one that is missing says which extra to install.
EXTRA_OF_MODULE = {
    **dict.fromkeys(("torch", "torchvision", "sklearn", "scipy", "pycocotools", "selectivesearch", "skimage",
                     "matplotlib", "onnx", "onnxscript"), "train"),
    "onnxruntime": "runtime", "ray": "ray",
}

COMMANDS = {
    "train": Command("detector.commands.train",
                     "train a detector: proposals, conv5 cache, fine-tuning, SVMs, box regression",
                     "sppnet train --config configs/raccoon_mobilenet.yaml data.root=/data/mine workdir=runs/mine"),
    "test": Command("detector.commands.test",
                    "test a model on a dataset split: detections, metrics, report.md and report.html",
                    "sppnet test --model runs/mine/model.pt --split test --out runs/mine/test"),
    "export": Command("detector.commands.export",
                      "export a model to ONNX for deployment without torch (sppnet detect runs the folder)",
                      "sppnet export --model runs/mine/model.pt --out runs/mine/export"),
    "detect": Command("detector.commands.detect",
                      "run a model on images (folder, glob, list file); VOC/COCO outputs for pseudo-labels",
                      "sppnet detect --model runs/mine/model.pt --input photos/ --output out/ --save-voc"),
    "evaluate": Command("detector.commands.evaluate",
                        "evaluate saved detections (COCO JSON or comp4 files) and write the report",
                        "sppnet evaluate --data VOC2007 --split test --detections runs/t/voc --out runs/eval"),
    "propose": Command("detector.commands.propose",
                       "compute and cache a split's selective search windows; recall report",
                       "sppnet propose --data /data/mine --split test --report runs/props"),
    "stats": Command("detector.commands.stats",
                     "per-class counts, image and box sizes of a dataset split",
                     "sppnet stats --data /data/mine --split trainval"),
    "classify": Command("detector.commands.classify",
                        "image classifier with spatial pyramid pooling: train, evaluate, predict (multi-size)",
                        "sppnet classify train --config configs/classify/bccd_mobilenet.yaml workdir=runs/cls"),
}


def format_help() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = [f"usage: {PROG} <command> [options]     ({PROG} <command> --help: the command's options)", "",
             "SPP-net object detection (He et al., 2014).", "", "commands:"]
    for name, cmd in COMMANDS.items():
        lines += [f"  {name.ljust(width)}  {cmd.summary}", f"  {' ' * width}    e.g. {cmd.example}"]
    lines += ["", "exit codes: 0 ok, 2 bad input, 130 interrupted (stats: 1 if some images are unreadable)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv`` (default ``sys.argv[1:]``) to a subcommand; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help", "help"):
        print(format_help())
        return 0
    if not argv or argv[0] not in COMMANDS:
        problem = "no command given" if not argv else f"unknown command {argv[0]!r}"
        print(f"{format_help()}\n\n{PROG}: error: {problem}; choose from {', '.join(COMMANDS)}",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    name, rest = argv[0], argv[1:]
    try:
        command = import_module(COMMANDS[name].module).main
        return run_cli(lambda: command(rest, prog=f"{PROG} {name}"))
    except ModuleNotFoundError as e:
        extra = EXTRA_OF_MODULE.get((e.name or "").split(".")[0])
        if extra is None:
            raise
        print(f"error: {PROG} {name} needs {e.name}, which is not installed: pip install 'sppnet[{extra}]'",
              file=sys.stderr)
        return EXIT_BAD_INPUT
