"""Train, evaluate and apply the classifier (``sppnet classify train|evaluate|predict``).

Training follows the paper's multi-size recipe (Sec. 3.1.2): one input size
per epoch, in turn, the same weights throughout. The frozen front of the
trunk sees each image once per size; only the trainable blocks, the pyramid
and the fc layers run every epoch, so epochs are cheap on the CPU.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .config import ClassifyConfig
from .data import ClassificationSet, load_classification_set, read_examples
from .inputs import network_inputs, size_batches
from .model import SPPClassifier, build_classifier, save_classifier

logger = logging.getLogger(__name__)

MODEL_FILE = "model.pt"


@dataclass(frozen=True)
class Evaluation:
    """Top-1 accuracy and the confusion matrix of one split."""
    class_names: tuple[str, ...]
    confusion: np.ndarray  # int64 [K, K]: row = true class, column = predicted
    size: int  # the input size it was measured at

    @property
    def count(self) -> int:
        return int(self.confusion.sum())

    @property
    def top1(self) -> float:
        return float(np.trace(self.confusion) / max(self.count, 1))

    @property
    def class_accuracy(self) -> list[float | None]:
        """Recall of each class (None for a class without examples)."""
        rows = self.confusion.sum(axis=1)
        return [float(self.confusion[k, k] / n) if n else None for k, n in enumerate(rows)]

    @property
    def mean_class_accuracy(self) -> float:
        """Mean of the per-class accuracies: what top-1 hides when one class dominates."""
        present = [a for a in self.class_accuracy if a is not None]
        return float(np.mean(present)) if present else 0.0


@dataclass(frozen=True)
class TrainResult:
    model_path: Path
    class_names: tuple[str, ...]
    train_counts: list[int]
    epoch_sizes: list[int]
    epoch_losses: list[float]
    epoch_seconds: list[float]  # training steps only
    map_seconds: dict[int, float]  # the frozen front's maps, once per size
    evaluation: Evaluation | None


def front_maps(model: SPPClassifier, images: Sequence[np.ndarray], size: int, cfg: ClassifyConfig) -> list[Tensor]:
    """The frozen front's map [C, h, w] of every image at ``size`` (batched by shape)."""
    inputs = network_inputs(images, size, cfg.input, model.backbone.preprocess, model.backbone.min_input_size)
    out: list[Tensor | None] = [None] * len(inputs)
    for batch in size_batches([x.shape for x in inputs], cfg.train.batch_size):
        maps = model.front_maps(torch.stack([inputs[i] for i in batch]))
        for i, m in zip(batch, maps):
            out[i] = m
    return out


def train_classifier(cfg: ClassifyConfig, evaluate: bool = True) -> TrainResult:
    """Train on ``data.train_split``, save ``workdir/model.pt``; evaluate on
    ``data.test_split`` when ``evaluate``."""
    torch.manual_seed(cfg.seed)  # dropout
    data = load_classification_set(cfg.data, cfg.data.train_split, limit_per_class=cfg.data.max_per_class)
    logger.info("%s: %d examples, per class %s", data.name, len(data.examples),
                dict(zip(data.class_names, data.counts())))
    model = build_classifier(cfg, len(data.class_names), cfg.backbone.weights)
    images = read_examples(data.examples)
    labels = torch.tensor([e.label for e in data.examples])
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.train.lr, momentum=cfg.train.momentum,
                                weight_decay=cfg.train.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.train.epochs)
    shuffle = torch.Generator().manual_seed(cfg.seed)
    maps: dict[int, list[Tensor]] = {}
    map_seconds: dict[int, float] = {}
    sizes, losses, seconds = [], [], []
    for epoch in range(cfg.train.epochs):
        size = cfg.input.sizes[epoch % len(cfg.input.sizes)]
        if size not in maps:
            start = time.perf_counter()
            maps[size] = front_maps(model, images, size, cfg)
            map_seconds[size] = time.perf_counter() - start
        start = time.perf_counter()
        loss = _train_epoch(model, optimizer, maps[size], labels, cfg.train.batch_size, shuffle)
        schedule.step()
        sizes.append(size)
        losses.append(loss)
        seconds.append(time.perf_counter() - start)
        logger.info("epoch %d/%d: size %d, loss %.4f, %.1f s", epoch + 1, cfg.train.epochs, size, loss, seconds[-1])
    workdir = Path(cfg.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    save_classifier(workdir / MODEL_FILE, model, cfg, data.class_names)
    evaluation = None
    if evaluate:
        test = load_classification_set(cfg.data, cfg.data.test_split, class_names=data.class_names)
        evaluation = evaluate_classifier(model, cfg, test)
    return TrainResult(workdir / MODEL_FILE, data.class_names, data.counts(), sizes, losses, seconds,
                       map_seconds, evaluation)


def _train_epoch(model: SPPClassifier, optimizer: torch.optim.Optimizer, maps: list[Tensor], labels: Tensor,
                 batch_size: int, shuffle: torch.Generator) -> float:
    """One pass over the maps; returns the mean training loss."""
    model.train()
    total = 0.0
    for batch in size_batches([m.shape for m in maps], batch_size, shuffle):
        scores = model.classify_maps(torch.stack([maps[i] for i in batch]))
        loss = nn.functional.cross_entropy(scores, labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(batch)
    return total / len(maps)


@torch.no_grad()
def class_probabilities(model: SPPClassifier, images: Sequence[np.ndarray], cfg: ClassifyConfig) -> Tensor:
    """Softmax scores [N, K] of each image at the evaluation size."""
    model.eval()
    maps = front_maps(model, images, cfg.input.eval_size(), cfg)
    out = torch.empty(len(maps), model.num_classes)
    for batch in size_batches([m.shape for m in maps], cfg.train.batch_size):
        out[batch] = model.classify_maps(torch.stack([maps[i] for i in batch])).softmax(dim=1)
    return out


def evaluate_classifier(model: SPPClassifier, cfg: ClassifyConfig, data: ClassificationSet) -> Evaluation:
    """Top-1 and confusion matrix of ``model`` on ``data`` (labels in the model's class order)."""
    probs = class_probabilities(model, read_examples(data.examples), cfg)
    k = len(data.class_names)
    truth = np.array([e.label for e in data.examples])
    confusion = np.bincount(truth * k + probs.argmax(dim=1).numpy(), minlength=k * k).reshape(k, k)
    return Evaluation(data.class_names, confusion, cfg.input.eval_size())
