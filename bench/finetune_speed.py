"""Fine-tuning time per iteration, side by side in one process: conv fine-tuning through the
whole trunk, through the cached frozen prefix, each with the pyramid's old autograd backward
("*_autograd_pool") and today's one-scatter backward, the prefix route under bf16
autocast (issue 23, levers 1 and 2) and with torch's own SGD ("prefix_torch_sgd", before
detector/training/sgd.py); fc-only fine-tuning and the conv5 pass, fp32 and bf16.

Each mode starts from the same pre-trained trunk, the same seeded head and the same
windows (``conv_samples``) and runs ``--iterations`` of ``finetune_with_conv``;
"prepare" is the prefix cache's one pass over the images (0 for the whole trunk).
The final loss is recorded too: the whole-trunk and prefix routes compute the same
thing, so theirs must match; bf16's shows how far autocast moves it. "fc" modes run
``finetune_head`` on the pooled bank (pooled once, not timed); "conv5" modes time
``compute_feature_maps`` per image and record bf16's largest relative deviation.

Run: python -m bench.finetune_speed --config configs/raccoon_mobilenet.yaml \
         --images 20 --iterations 100 --root /tmp/i23-speed/ft data.root=/work/shared/data/raccoon
Writes bench/results/finetune_speed/<name>.json.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import sys
import time
from pathlib import Path

import detector  # noqa: F401  (isort: skip) sets THP_MEM_ALLOC_ENABLE before torch loads

import torch  # noqa: E402

from detector.build import build_head, seed_everything  # noqa: E402
from detector.config import load_detector_config  # noqa: E402
from detector.training import conv_finetune  # noqa: E402
from detector.training.conv_finetune import finetune_with_conv  # noqa: E402
from detector.training.sgd import caffe_groups  # noqa: E402
from detector.evaluation.report import collect_versions  # noqa: E402
from detector.features.conv_maps import compute_feature_maps  # noqa: E402
from detector.fileio import write_json_atomic  # noqa: E402
from detector.features import pyramid_grad  # noqa: E402
from detector.features.pyramid import SpatialPyramidPool  # noqa: E402
from detector.features.spp import SpatialPyramidPool2d  # noqa: E402
from detector.training.fc_finetune import finetune_head  # noqa: E402
from detector.training.context import TrainingContext, collect_training_windows, conv_samples  # noqa: E402
from detector.training.train import build_training_context  # noqa: E402
from bench.stamps import utc_now  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "finetune_speed"
MODES = ("whole_trunk_autograd_pool", "prefix_autograd_pool", "whole_trunk", "prefix", "prefix_loop_argmax", "prefix_bf16",
         "prefix_torch_sgd", "fc", "fc_bf16", "conv5", "conv5_bf16")


def autograd_pool(self, feature_map, cells):
    """The pyramid with a gradient as it was before detector/features/pyramid_grad.py (commit d71e7c3):
    slices and maxima per window and bin through autograd. The "*_autograd_pool" modes' baseline."""
    layer = SpatialPyramidPool2d(self.levels, rule="exact")
    rows = [torch.cat([p[0].permute(1, 2, 0).reshape(-1) for p in layer.pool_levels(feature_map[None, :, y0:y1, x0:x1])])
            for x0, y0, x1, y1 in cells.tolist()]
    return torch.stack(rows) if rows else feature_map.new_zeros((0, self.output_dim(feature_map.shape[0])))


@contextlib.contextmanager
def pooling_of(mode: str):
    """The old autograd pyramid for a ``*_autograd_pool`` mode; the one-scatter pyramid's forward
    as its per-window loop (``pyramid_argmax_loop``, before issue 23's vectorised one) for a
    ``*_loop_argmax`` mode; today's otherwise."""
    if mode.endswith("_loop_argmax"):
        today_argmax = pyramid_grad.pyramid_argmax
        pyramid_grad.pyramid_argmax = pyramid_grad.pyramid_argmax_loop
        try:
            yield
        finally:
            pyramid_grad.pyramid_argmax = today_argmax
        return
    if not mode.endswith("_autograd_pool"):
        yield
        return
    today = SpatialPyramidPool._pool_with_grad
    SpatialPyramidPool._pool_with_grad = autograd_pool
    try:
        yield
    finally:
        SpatialPyramidPool._pool_with_grad = today


@contextlib.contextmanager
def optimizer_of(mode: str):
    """torch's own SGD (weight decay added by torch, a new tensor per parameter and step) for a
    ``*_torch_sgd`` mode, as fine-tuning used it before detector/training/sgd.py; today's otherwise."""
    if not mode.endswith("_torch_sgd"):
        yield
        return
    today = conv_finetune.fine_tuning_optimizer

    def torch_sgd(head, cfg, more_weights=()):
        return torch.optim.SGD(caffe_groups(head, cfg, more_weights), lr=cfg.lr, momentum=cfg.momentum)
    conv_finetune.fine_tuning_optimizer = torch_sgd
    try:
        yield
    finally:
        conv_finetune.fine_tuning_optimizer = today


def autocast_of(mode: str):
    """bf16 autocast on the CPU for a ``*_bf16`` mode, else nothing."""
    return torch.autocast("cpu", dtype=torch.bfloat16) if mode.endswith("bf16") else contextlib.nullcontext()


def run_fc(ctx: TrainingContext, cfg, bank, mode: str, log_dir: Path) -> dict:
    """fc-only fine-tuning on ``bank`` (TrainingWindows) in ``mode``; seconds and final loss."""
    seed_everything(cfg.seed)
    head = build_head(cfg, ctx.features.output_dim, len(ctx.class_names)).eval()
    cpu = time.process_time()
    with autocast_of(mode):
        # float32 banks in both modes: autocast refuses the float16 bank's concatenation
        stats = finetune_head(head, bank.fg.float(), bank.fg_labels, bank.bg.float(), cfg.finetune, cfg.seed,
                              log_dir / f"loss_{mode}.jsonl", progress=False)
    return timing_of(mode, stats, 0.0, time.process_time() - cpu)


def run_conv5(ctx: TrainingContext, cfg, samples, mode: str, reference: list | None) -> tuple[dict, list]:
    """conv5 maps of every sample's image in ``mode``: seconds per image, and (given the fp32
    maps) the largest deviation from them relative to their largest magnitude."""
    maps = []
    start, cpu = time.perf_counter(), time.process_time()
    with autocast_of(mode):
        for s in samples:
            maps.append(compute_feature_maps(ctx.backbone, s.image.pixels(), cfg.features.scales,
                                             cfg.features.max_size)[0].features)
    seconds = time.perf_counter() - start
    out = {"mode": mode, "images": len(samples), "s_per_image": round(seconds / len(samples), 4),
           "cpu_s_per_image": round((time.process_time() - cpu) / len(samples), 4)}
    if reference is not None:
        out["max_rel_deviation"] = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(maps, reference))
    return out, maps


def run_mode(ctx: TrainingContext, cfg, samples, trunk_state: dict, mode: str, log_dir: Path) -> dict:
    """One conv fine-tuning run in ``mode`` from the pre-trained trunk; its seconds and final loss."""
    ctx.backbone.load_state_dict(trunk_state)
    seed_everything(cfg.seed)
    head = build_head(cfg, ctx.features.output_dim, len(ctx.class_names)).eval()
    features, prepare = ctx.features, 0.0
    if mode.startswith("prefix"):
        features = ctx.features.with_frozen_prefix(cfg.finetune.conv_layers, cfg.cache_root())
        start = time.perf_counter()
        features.prefix.prepare([s.image for s in samples], progress=False)
        prepare = time.perf_counter() - start
    cpu = time.process_time()
    with autocast_of(mode), pooling_of(mode), optimizer_of(mode):
        stats = finetune_with_conv(head, features, samples, cfg.finetune, cfg.seed,
                                   log_dir / f"loss_{mode}.jsonl", progress=False)
    return timing_of(mode, stats, prepare, time.process_time() - cpu)


def timing_of(mode: str, stats: dict, prepare: float, cpu: float) -> dict:
    """A mode's record from its fine-tuning statistics: wall and CPU seconds per iteration, final loss."""
    return {"mode": mode, "prepare_s": round(prepare, 2), "iterations": stats["iterations"],
            "loop_s": round(stats["seconds"], 2), "s_per_iteration": round(stats["seconds"] / stats["iterations"], 4),
            "cpu_s_per_iteration": round(cpu / stats["iterations"], 4),
            "final_loss": stats["loss"], "final_accuracy": stats["accuracy"], "threads": stats.get("threads")}


def projected(result: dict, iterations: int) -> float:
    """Seconds a run of ``iterations`` would take at this mode's measured costs."""
    return round(result["prepare_s"] + iterations * result["s_per_iteration"], 1)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--images", type=int, default=20, help="training images (data.max_train_images)")
    p.add_argument("--iterations", type=int, default=100)
    p.add_argument("--root", type=Path, required=True, help="fresh workdir and cache root (not in the repo)")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--project", type=int, default=2000, help="iterations to project the stage time for")
    p.add_argument("--condition", choices=["quiet", "loaded"], default="loaded",
                   help="how busy the machine was (others' jobs count as loaded)")
    p.add_argument("--name", default="raccoon_20img")
    p.add_argument("--threads", type=int, default=0,
                   help="torch intra-op threads (0: torch's default, as training runs today)")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_detector_config(args.config, [*args.overrides, f"data.max_train_images={args.images}",
                                             f"finetune.iterations={args.iterations}",
                                             f"workdir={args.root / 'run'}", f"cache_dir={args.root / 'cache'}"])
    ctx = build_training_context(cfg, progress=False)
    ctx.propose()
    samples = conv_samples(ctx, cfg.finetune)
    trunk = copy.deepcopy(ctx.backbone.state_dict())
    load_before, started = os.getloadavg()[0], utc_now()
    results, bank, fp32_maps = [], None, None
    for mode in args.modes:
        if mode.startswith("conv5"):
            ctx.backbone.load_state_dict(trunk)
            result, maps = run_conv5(ctx, cfg, samples, mode, fp32_maps)
            fp32_maps = fp32_maps if mode.endswith("bf16") else maps
        else:
            if mode.startswith("fc") and bank is None:
                ctx.backbone.load_state_dict(trunk)
                ctx.cache_conv5()
                bank = collect_training_windows(ctx, cfg.finetune)
            result = (run_fc(ctx, cfg, bank, mode, args.root) if mode.startswith("fc")
                      else run_mode(ctx, cfg, samples, trunk, mode, args.root))
            result[f"projected_{args.project}_iterations_s"] = projected(result, args.project)
        results.append(result)
        print(json.dumps(result), flush=True)
    record = {"command": " ".join(["python -m bench.finetune_speed", *(argv if argv is not None else sys.argv[1:])]),
              "machine": "2 CPU cores, no GPU", "condition": args.condition,
              "load_1min_before": load_before, "load_1min_after": os.getloadavg()[0],
              "torch_threads": torch.get_num_threads(), "images": ctx.num_images, "samples": len(samples),
              "config": args.config, "conv_layers": cfg.finetune.conv_layers, "scales": cfg.features.scales,
              "versions": collect_versions(), "results": results,
              "started": started, "finished": utc_now()}
    write_json_atomic(RESULTS / f"{args.name}.json", record)
    return record


if __name__ == "__main__":
    main()
