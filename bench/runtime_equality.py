"""The runtime's detections and mAP against the torch model's on a whole dataset split.

For every image of the split: selective search once, then ``Detector.detect``
(the model file) and ``OnnxDetector.detect`` (its export, fp32 and
``--int8``) on those windows; per image the largest box and score
differences (:func:`bench.runtime.compare`), and the VOC07 mAP of each.

Run: python -m bench.runtime_equality --model runs/raccoon/model.pt --data ../shared/data/raccoon --split test
Writes bench/results/runtime/<name>.json.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


from bench.runtime import MACHINE, RESULTS, compare, versions  # noqa: E402
from detector.data import load_dataset  # noqa: E402
from detector.deploy.export import export_model  # noqa: E402
from detector.deploy.runtime import load_export  # noqa: E402
from detector.evaluation import evaluate_detections  # noqa: E402
from detector.fileio import write_json_atomic  # noqa: E402
from detector.images import read_image  # noqa: E402
from detector.model import load_model  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--data", required=True, type=Path, help="VOC-layout dataset root")
    p.add_argument("--split", default="test")
    p.add_argument("--name", required=True, help="record name")
    p.add_argument("--scratch", type=Path, default=Path("/tmp/sppnet_bench_runtime_equality"))
    args = p.parse_args(argv)
    torch_detector = load_model(args.model, device="cpu")
    runtimes = {}
    for precision in ("fp32", "int8"):
        export_model(args.model, args.scratch / precision, int8=precision == "int8")
        runtimes[precision] = load_export(args.scratch / precision)
    dataset = load_dataset(args.data, args.split, class_names=torch_detector.class_names)
    dets = {"torch": {}, "runtime_fp32": {}, "runtime_int8": {}}
    per_image = []
    for record in dataset:
        image = read_image(record.path)
        windows = torch_detector.propose(image)
        dets["torch"][record.image_id] = torch_detector.detect(image, windows)
        for precision, runtime in runtimes.items():
            dets[f"runtime_{precision}"][record.image_id] = runtime.detect(image, windows)
        per_image.append({"image": record.image_id, "windows": len(windows),
                          **compare(dets["torch"][record.image_id], dets["runtime_fp32"][record.image_id])})
    records = [dataset[i] for i in range(len(dataset))]
    maps = {name: float(evaluate_detections(records, d, torch_detector.class_names, "voc07").mAP)
            for name, d in dets.items()}
    record = {"command": "python -m bench.runtime_equality " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": MACHINE, "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
              "versions": versions(), "model": str(args.model), "split": args.split, "images": len(per_image),
              "voc07_mAP": maps, "images_within_tolerance": sum(r["within_tolerance"] for r in per_image),
              "max_box_diff_px": max(r["max_box_diff_px"] for r in per_image),
              "max_score_diff": max(r["max_score_diff"] for r in per_image), "per_image": per_image}
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json_atomic(RESULTS / f"{args.name}.json", record)
    print({k: v for k, v in record.items() if k != "per_image"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
