"""What kind of false positives rank among the true ones: SPP-net against R-CNN on raccoon.

    .venv/bin/python -m bench.fp_types [--recall 0.7]

Reads the detections of finished ``bench/detection.py run`` experiments (no
model runs) and walks each run's detections in decreasing score, as AP does,
until it has found ``--recall`` of the ground-truth boxes (the walk of
``detector.evaluation.errors``, which every test report now shows with the
kinds localisation / duplicate / confusion / background). Every false
positive on the way is sorted here by its geometry against the ground-truth
box it overlaps most:

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
from pathlib import Path

from bench.detection import BY_NAME, RESULTS, RUNS, experiment_config

from detector.boxes import as_box_tensor, xywh_to_xyxy
from detector.evaluation.errors import detection_kinds, walk_length
from detector.evaluation.matching import match_records
from detector.fileio import write_json_atomic
from detector.build import build_dataset
from detector.records import Detections, ImageRecord

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


def as_records(detections: list[dict], gt: dict[str, np.ndarray]) -> tuple[list[ImageRecord], dict]:
    """The ground truth and COCO-result detections as one class of records (class-agnostic)."""
    records = [ImageRecord(k, Path(k), 0, 0, b, np.zeros(len(b), np.int64), np.zeros(len(b), bool))
               for k, b in gt.items()]
    by_image: dict[str, list[dict]] = {}
    for d in detections:
        by_image.setdefault(str(d["image_id"]), []).append(d)
    dets = {k: Detections(xywh_to_xyxy(as_box_tensor([d["bbox"] for d in ds])).numpy(),
                          np.array([d["score"] for d in ds], np.float32), np.zeros(len(ds), np.int64))
            for k, ds in by_image.items()}
    return records, dets


def fp_types(detections: list[dict], gt: dict[str, np.ndarray], recall: float) -> dict:
    """False positives by kind among the detections ranked above ``recall`` of the boxes.

    The walk and the duplicates are the library's (detector.evaluation.errors);
    the other false positives are split here by their geometry against the box
    they overlap most."""
    records, dets = as_records(detections, gt)
    matched = match_records(records, dets, ("object",))
    kinds = detection_kinds(matched)
    order = matched.ranking(0)
    n_gt = matched.n_positives(0)
    walked = order[:walk_length(matched.tp[order], n_gt, recall)]
    counts = Counter()
    for d in walked[~matched.tp[walked]]:
        j = matched.matches.best_gt[d]
        if kinds[d] == "duplicate":
            counts["duplicate"] += 1
        elif j < 0:
            counts["background"] += 1
        else:
            image = dets[records[matched.matches.image_index[d]].image_id]
            counts[false_positive_kind(image.boxes[matched.matches.det_index[d]], matched.gt_boxes[j])] += 1
    tp = int(matched.tp[walked].sum())
    return {"true_positives": tp, "ground_truth": n_gt, "reached_recall": tp >= math.ceil(recall * n_gt - 1e-9),
            "false_positives": {k: counts.get(k, 0) for k in KINDS}}


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
