"""Export a trained model for deployment without torch: two ONNX graphs and a manifest.

    sppnet export --model runs/raccoon/model.pt --out runs/raccoon/export
    sppnet export --model runs/raccoon/model.pt --out runs/raccoon/export_int8 --int8

Writes OUT/trunk.onnx (the conv layers, any image size), OUT/head.onnx (fc6,
fc7, SVM scores and box deltas for any number of windows) and
OUT/manifest.json (classes, scales, preprocessing, proposal parameters,
window-mapping rule, pyramid, thresholds, NMS, versions). Run it with
`sppnet detect --model OUT ...`, which then needs only numpy, OpenCV and
onnxruntime (pip install 'sppnet[runtime]'). Needs torch and onnx
(sppnet[train]); --int8 also onnxruntime.
"""
from __future__ import annotations

import argparse

from detector.deploy.export import export_model
from detector.fileio import check_output_dir


def main(argv=None, prog: str | None = None) -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model file written by sppnet train")
    p.add_argument("--out", required=True, help="the export folder to write")
    p.add_argument("--int8", action="store_true",
                   help="quantise fc6/fc7 to int8 (onnxruntime dynamic quantisation; smaller and faster, "
                        "scores change slightly)")
    args = p.parse_intermixed_args(argv)
    check_output_dir(args.out, "--out")
    manifest = export_model(args.model, args.out, int8=args.int8)
    print(f"exported {args.model} -> {manifest.parent}/ (trunk.onnx, head.onnx{' int8' if args.int8 else ''}, "
          f"manifest.json); run it with: sppnet detect --model {manifest.parent} --input IMAGES --output OUT")
    return 0
