"""What kind of false positives rank among the true ones: SPP-net against R-CNN on raccoon.

    .venv/bin/python -m bench.fp_types [--recall 0.7]

Reads the detections of finished ``bench/detection.py run`` experiments (no
model runs) and walks each run's detections in decreasing score, as AP does,
until it has found ``--recall`` of the ground-truth boxes. Every false
positive on the way is sorted by its relation to the ground-truth box it
overlaps most:

- duplicate: IoU >= 0.5 with a box already matched;
- part: at least 70% of the detection lies inside the box, and the detection is smaller;
- too big: it covers at least 70% of the box and is larger;
- background: less than 30% of the detection lies on the box;
- shifted: the rest.

Writes bench/results/analysis/raccoon_fp_types.json.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter

import numpy as np
import torch

from bench.detection import BY_NAME, RESULTS, RUNS, experiment_config

from detector.boxes import box_iou
from detector.fileio import write_json_atomic
from detector.build import build_dataset

DATASET = "raccoon"
# (run directory, test directory): the protocol P, B and F runs of both methods.
RUNS_TO_READ = [(f"{exp}{suffix}", "test") for exp in ("paper_spp1_fc7", "paper_rcnn_fc7",
                                                       "fewimg_spp1_fc7", "fewimg_rcnn_fc7",
                                                       "spp1_fc7", "rcnn_fc7")
                for suffix in ("", "_seed1", "_seed2")]
KINDS = ("part", "too big", "background", "shifted", "duplicate")


def false_positive_kind(det: np.ndarray, gt: np.ndarray) -> str:
    """Kind of a false positive ``det`` [4] by the ground-truth box [4] it overlaps most."""
    ix = max(0.0, min(det[2], gt[2]) - max(det[0], gt[0])) * max(0.0, min(det[3], gt[3]) - max(det[1], gt[1]))
    area = (det[2] - det[0]) * (det[3] - det[1])
    gt_area = (gt[2] - gt[0]) * (gt[3] - gt[1])
    if ix >= 0.7 * area and area < gt_area:
        return "part"
    if ix >= 0.7 * gt_area and area > gt_area:
        return "too big"
    if ix < 0.3 * area:
        return "background"
    return "shifted"


def fp_types(detections: list[dict], gt: dict[str, np.ndarray], recall: float) -> dict:
    """False positives by kind among the detections ranked above ``recall`` of the boxes."""
    n_gt = sum(len(b) for b in gt.values())
    wanted = math.ceil(recall * n_gt)
    matched: set = set()
    kinds: Counter = Counter()
    tp = 0
    for d in sorted(detections, key=lambda d: -d["score"]):
        if tp >= wanted:
            break
        boxes = gt.get(d["image_id"], np.zeros((0, 4), np.float32))
        x, y, w, h = d["bbox"]
        det = np.array([x, y, x + w, y + h], np.float32)
        if len(boxes) == 0:
            kinds["background"] += 1
            continue
        iou = box_iou(torch.from_numpy(det[None]), torch.from_numpy(boxes)).numpy()[0]
        j = int(iou.argmax())
        if iou[j] >= 0.5:
            if (d["image_id"], j) in matched:
                kinds["duplicate"] += 1
            else:
                matched.add((d["image_id"], j))
                tp += 1
            continue
        kinds[false_positive_kind(det, boxes[j])] += 1
    return {"true_positives": tp, "ground_truth": n_gt, "reached_recall": tp >= wanted,
            "false_positives": {k: kinds.get(k, 0) for k in KINDS}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recall", type=float, default=0.7)
    args = p.parse_args(argv)
    cfg = experiment_config(DATASET, BY_NAME["paper_spp1_fc7"])
    gt = {r.image_id: r.boxes[~r.difficult].astype(np.float32) for r in build_dataset(cfg.data, cfg.data.test_split)}
    records = []
    for run, test in RUNS_TO_READ:
        path = RUNS / DATASET / run / test / "detections.json"
        if not path.exists():
            print(f"skipped {run}: no {path}", file=sys.stderr)
            continue
        records.append({"run": run, "test": test, **fp_types(json.loads(path.read_text()), gt, args.recall)})
        print(json.dumps(records[-1]), flush=True)
    write_json_atomic(RESULTS / "analysis" / f"{DATASET}_fp_types.json", {"recall": args.recall, "runs": records})
    return 0


if __name__ == "__main__":
    sys.exit(main())
