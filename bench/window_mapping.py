"""Where the pooled span of a window sits: the old window mapping against the official rule.

20,000 random windows (sides 20-500 px, a skewed spread towards small ones)
on a 688 x 912 resized image (a 43 x 57 map at stride 16), for each grid of
cell centres the backbones have (docs/window_mapping.md). For the windows
that contain at least one cell centre along x: the mean and largest offset
of the kept span's centre from the window's centre, how often the last cell
whose centre is inside the window is left out, and how often a cell whose
centre is outside is pooled.

Run: .venv/bin/python -m bench.window_mapping
     .venv/bin/python -m bench.window_mapping --ab bench/results/window_mapping
(the second prints the detection A/B table from the run records kept there;
docs/benchmarks_window_mapping.md says how they were made).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from detector.features.pyramid import FeatureGrid, map_windows_to_features

GRIDS = {"zf5, mobilenet_v2, resnet18/50, tiny": 0.0, "vgg16": 7.5, "alexnet": 15.0, "squeezenet1_0": 17.0}


def old_mapping_x(x1: torch.Tensor, x2: torch.Tensor, stride: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The rule before the fix (Appendix A read on 1-based pixels and 1-based cells): x cells [c0, c1)."""
    c0 = torch.floor((x1 + 1) / stride).long().clamp(0, size - 1)
    c1 = (torch.ceil(x2 / stride).long() - 1).clamp(1, size)
    centre = torch.floor(((x1 + x2) / 2 - 0.5) / stride + 0.5).long().clamp(0, size - 1)
    empty = c1 <= c0
    return torch.where(empty, centre, c0), torch.where(empty, centre + 1, c1)


def ab_table(results: Path) -> str:
    """Markdown table of the old/new mapping runs (``{old,new}_<run>.json`` records of bench.detection)."""
    rows = ["| mapping | seed | mAP with box regression | without | regression's gain |", "|---|---|---|---|---|"]
    for side in ("old", "new"):
        records = sorted((json.loads(p.read_text()) for p in results.glob(f"{side}_*.json")),
                         key=lambda r: r.get("seed", 0))
        for r in records:
            rows.append(f"| {side} | {r.get('seed', 0)} | {100 * r['mAP']:.1f} | {100 * r['mAP_without_bbox']:.1f} "
                        f"| {100 * (r['mAP'] - r['mAP_without_bbox']):+.1f} |")
        if records:
            with_bbox = sum(r["mAP"] for r in records) / len(records)
            without = sum(r["mAP_without_bbox"] for r in records) / len(records)
            rows.append(f"| **{side}** | mean of {len(records)} | **{100 * with_bbox:.1f}** | **{100 * without:.1f}** "
                        f"| {100 * (with_bbox - without):+.1f} |")
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ab", type=Path, help="print the detection A/B table from the records in this folder")
    args = p.parse_args()
    if args.ab:
        print(ab_table(args.ab))
        return
    gen = torch.Generator().manual_seed(0)
    n, stride, width, height = 20000, 16, 57, 43
    side = 20 + torch.rand(n, 2, generator=gen, dtype=torch.float64) ** 2 * 480
    x1 = torch.rand(n, generator=gen, dtype=torch.float64) * (width * stride - side[:, 0])
    y1 = torch.rand(n, generator=gen, dtype=torch.float64) * (height * stride - side[:, 1])
    boxes = torch.stack([x1, y1, x1 + side[:, 0], y1 + side[:, 1]], 1)
    print("| cell centres (backbones) | mapping | span centre - window centre, mean (max abs) "
          "| last inside cell dropped | an outside cell added |\n|---|---|---|---|---|")
    for name, offset in GRIDS.items():
        grid = FeatureGrid(stride, offset)

        def centre(j):
            return stride * j + offset + 0.5

        # The first and last cell whose centre lies inside each window, along x.
        first_in = torch.floor((boxes[:, 0] - offset - 0.5) / stride).long() + 1
        last_in = torch.ceil((boxes[:, 2] - offset - 0.5) / stride).long() - 1
        ok = (first_in <= last_in) & (first_in >= 0) & (last_in <= width - 1)
        new = map_windows_to_features(boxes, grid, height, width)
        for label, (c0, c1) in (("old", old_mapping_x(boxes[:, 0], boxes[:, 2], stride, width)),
                                ("new", (new[:, 0], new[:, 2]))):
            lo, hi = c0[ok], c1[ok] - 1
            error = (centre(lo) + centre(hi)) / 2 - (boxes[ok, 0] + boxes[ok, 2]) / 2
            dropped = (hi < last_in[ok]).double().mean()
            added = ((centre(lo) < boxes[ok, 0]) | (centre(hi) > boxes[ok, 2])).double().mean()
            print(f"| 16 j + {offset:g} ({name}) | {label} | {error.mean():+.1f} px ({error.abs().max():.1f}) "
                  f"| {100 * dropped:.0f}% | {100 * added:.0f}% |")


if __name__ == "__main__":
    main()
