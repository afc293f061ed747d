"""Run a trained detector on images: a file, a folder, a glob or a text file of paths.

    sppnet detect --model runs/raccoon/model.pt --input photos/ --output out/
    sppnet detect --model M --input 'photos/**/*.jpg' --output out/ --threshold 0.3 --save-voc --save-coco

Writes out/results.jsonl (one line per image, as it goes), out/results.json
(file, boxes, class names, scores) and one annotated image per input;
--save-voc a VOC-layout folder out/voc/ (pseudo-labels: train on it with
data.root=out/voc), --save-coco out/coco_results.json. Non-image files are
skipped with a warning.

--model may also be an export folder (sppnet export): the same run with
numpy, OpenCV and onnxruntime only, no torch (pip install 'sppnet[runtime]').
"""
from __future__ import annotations

import argparse

from detector.deploy.manifest import is_export_folder
from detector.fileio import check_output_dir
from detector.inference.folders import detect_files, list_inputs


def main(argv=None, prog: str | None = None) -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True,
                   help="model file written by sppnet train, or an export folder written by sppnet export")
    p.add_argument("--input", required=True,
                   help="an image, a folder of images, a glob pattern (quote it) or a .txt file of paths")
    p.add_argument("--output", required=True, help="folder for results.json and annotated images")
    p.add_argument("--threshold", type=float, default=0.0,
                   help="save and draw detections whose score is at least this (SVM scores: 0 is the margin)")
    p.add_argument("--save-voc", action="store_true",
                   help="also write OUTPUT/voc/, a VOC-layout folder of the detections (pseudo-labels)")
    p.add_argument("--save-coco", action="store_true", help="also write OUTPUT/coco_results.json")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where the conv layers run (auto: CUDA when available)")
    p.add_argument("--recursive", action="store_true", help="with a folder --input: its subfolders too")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("overrides", nargs="*",
                   help="test-time key=value overrides (sections proposals, features, test; "
                        "pool.window_margin, pool.window_scaling), e.g. test.nms_iou=0.4")
    args = p.parse_intermixed_args(argv)
    check_output_dir(args.output, "--output")
    detector = load_detector(args.model, args.device, args.overrides)
    summary = detect_files(detector, list_inputs(args.input, recursive=args.recursive), args.output, args.threshold,
                           progress=not args.no_progress, save_voc=args.save_voc, save_coco=args.save_coco)
    n = sum(len(r["detections"]) for r in summary["images"])
    print(f"{len(summary['images'])} images, {n} detections, {len(summary['skipped'])} skipped "
          f"-> {args.output}/results.json")
    return 0



def load_detector(model: str, device: str, overrides: list[str]):
    """The torch detector of a model file, or the torch-free one of an export folder
    (imported only when needed: the runtime path never loads torch)."""
    if is_export_folder(model):
        if device == "cuda":
            raise ValueError(f"{model}: an export folder runs on the CPU (onnxruntime); drop --device cuda "
                             "or use the model file")
        from detector.deploy.runtime import load_export
        return load_export(model, overrides)
    from detector.model import load_model
    return load_model(model, device=device, overrides=overrides)
