"""Training as a list of declared stages, their checkpoints, and the runner.

A :class:`TrainingStage` says what it reads and makes: the config sections
it reads, the results of earlier stages it reads (``reads``) and the
results it makes (``makes``). From that alone :func:`run_stages` derives

- what each stage is given: the shared settings every stage reads (on the host's
  context) and a :class:`StageConfig` holding only the config sections it
  declares (``sections``) and the fields of other sections it borrows
  (``borrows``); reading any other section is an error;
- each checkpoint's key: the parts every checkpoint shares (training data,
  proposals, trunk, windows, seed) plus the stage's own sections and those of
  every stage upstream of what it reads (:func:`key_sections`): box
  regression on a fine-tuned trunk is keyed by ``finetune`` too, on the
  pre-trained trunk it is not; a borrowed field keys the stage only off its
  default (the workdirs from before it was declared keep their keys);
- what to reuse: a stage with a checkpoint on disk is restored, not run;
- when to pool: the pass that pools the training windows (the fine-tuning
  bank of finetune.sampler=bank) runs only before a stage that must be computed and
  trains on them, once per trunk, for the parts the stages still to compute
  read, and each part is freed when no later stage wants it;
- when to re-cache: a stage that makes ``conv5`` (a fine-tuned trunk's maps)
  makes the pooled windows stale.

Results are named by plain strings: "proposals", "conv5" (the current
trunk's conv5 maps), "head" (fc layers), "trunk" (fine-tuned conv weights),
"svms", "regressors".
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Mapping, Protocol, Sequence

import torch

from ..data.mirror import original_id
from ..fileio import atomic_path, params_digest, write_json_atomic
from ..timing import timed_stage

logger = logging.getLogger(__name__)

# The parts of the pooled training windows a stage can train on (the streamed stages
# pool their own windows as they go, and hold none).
FINETUNE_WINDOWS = "finetune"


class StageHost(Protocol):
    """What the runner needs from a training run (``detector.training.train.TrainingRun``)."""

    timings: dict[str, float]
    reused: list[str]

    def config_of(self, stage: "TrainingStage") -> "StageConfig": ...

    def checkpoint(self, name: str, sections: Sequence[str], borrows: Sequence[str]) -> "Checkpoint": ...

    def pool_windows(self, parts: set[str]) -> None: ...

    def release_windows(self, parts: set[str]) -> None: ...


class StageConfig:
    """The config one stage is given: its declared sections (``sections``) and borrowed
    fields (``borrows``, "section.field"), as attributes; any other section is an error
    (a stage that read an undeclared section would not be keyed by it)."""

    def __init__(self, stage: str, sections: Mapping[str, Any], borrowed: Mapping[str, Any] = {}):
        self._stage = stage
        parts: dict[str, Any] = dict(sections)
        for dotted, value in borrowed.items():
            section, name = dotted.split(".")
            parts.setdefault(section, SimpleNamespace())
            setattr(parts[section], name, value)
        self._parts = parts

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._parts[name]
        except KeyError:
            raise AttributeError(f"training stage {self._stage!r} does not declare the config section "
                                 f"{name!r} (declared: {', '.join(sorted(self._parts)) or 'none'})") from None


@dataclass(frozen=True)
class TrainingStage:
    """One declared stage of training.

    ``run(host, config)`` computes it from the host's shared context and its
    :class:`StageConfig` and returns the state to checkpoint (None for a stage
    without a checkpoint, whose own cache keys it); ``restore(host, state)``
    takes its result from a checkpoint instead. ``sections``: the config
    sections it reads; ``borrows``: single fields of other sections it reads
    ("svm.target_norm"). ``pooled``: the part of the pooled training windows
    it trains on (FINETUNE_WINDOWS), if any. ``name`` names its checkpoint,
    its log lines, its entry in the timings and in the reused stages.
    """

    name: str
    run: Callable[[StageHost, StageConfig], dict | None]
    sections: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()
    makes: tuple[str, ...] = ()
    restore: Callable[[StageHost, dict], None] | None = None
    pooled: str | None = None
    borrows: tuple[str, ...] = ()

    @property
    def checkpointed(self) -> bool:
        return self.restore is not None


def key_sections(stages: Sequence[TrainingStage]) -> dict[str, tuple[str, ...]]:
    """Each stage's key sections: the sections of the stages that made what it reads
    (the last maker of each result, transitively), then its own."""
    maker: dict[str, str] = {}
    sections: dict[str, tuple[str, ...]] = {}
    for stage in stages:
        upstream = [s for result in stage.reads if result in maker for s in sections[maker[result]]]
        sections[stage.name] = tuple(dict.fromkeys(upstream + list(stage.sections)))
        for result in stage.makes:
            maker[result] = stage.name
    return sections


def stage_checkpoints(stages: Sequence[TrainingStage], host: StageHost) -> dict[str, "Checkpoint"]:
    """The checkpoint of every checkpointed stage, keyed as :func:`key_sections` says."""
    sections = key_sections(stages)
    return {s.name: host.checkpoint(s.name, sections[s.name], s.borrows) for s in stages if s.checkpointed}


def windows_wanted(stages: Sequence[TrainingStage], todo: Sequence[bool]) -> set[str]:
    """The parts of the pooled training windows that the stages to compute read, up to
    the next new trunk (windows pooled now would be stale after it)."""
    parts = set()
    for stage, compute in zip(stages, todo):
        if compute and stage.pooled:
            parts.add(stage.pooled)
        if "conv5" in stage.makes:
            break
    return parts


def run_stages(stages: Sequence[TrainingStage], host: StageHost) -> dict[str, "Checkpoint"]:
    """Run or restore every stage in order; return the checkpoints (by stage name)."""
    checkpoints = stage_checkpoints(stages, host)
    # Each checkpoint is read once, up front: the pooling pass depends on which stages remain.
    states = {name: c.load() for name, c in checkpoints.items()}
    todo = [states.get(s.name) is None for s in stages]
    held: set[str] = set()
    for i, stage in enumerate(stages):
        if todo[i] and stage.pooled and stage.pooled not in held:
            held = windows_wanted(stages[i:], todo[i:])
            with timed_stage(host.timings, "pool_training_windows"):
                host.pool_windows(held)
        with timed_stage(host.timings, stage.name):
            if todo[i]:
                state = stage.run(host, host.config_of(stage))
                if stage.checkpointed:
                    checkpoints[stage.name].save(state)
            else:
                stage.restore(host, states[stage.name])
                host.reused.append(stage.name)
        # Free what no later stage reads (e.g. the fine-tuning bank before the SVMs).
        done = held if "conv5" in stage.makes else held - windows_wanted(stages[i + 1:], todo[i + 1:])
        if done:
            host.release_windows(done)
            held -= done
    return checkpoints


class Checkpoint:
    """One stage's saved result: its file is named by the digest of everything it depends on.

    A small ``<name>.last.json`` beside it remembers the inputs of the last
    run, so a recomputation can say what changed.
    """

    def __init__(self, stages_dir: Path, name: str, parts: dict):
        self.name = name
        self.parts = parts
        self.path = stages_dir / f"{name}-{params_digest(parts)}.pt"
        self._last = stages_dir / f"{name}.last.json"

    def load(self) -> dict | None:
        if not self.path.exists():
            logger.info("stage %s: computing (%s)", self.name, self._why())
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:  # a corrupt checkpoint is recomputed, not fatal
            logger.warning("%s: unreadable stage checkpoint (%s); recomputing", self.path, e)
            return None
        logger.info("stage %s: reused %s (same data and parameters)", self.name, self.path.name)
        return state

    def save(self, state: dict) -> None:
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)
        write_json_atomic(self._last, self.parts)

    def _why(self) -> str:
        try:
            last = json.loads(self._last.read_text())
        except (OSError, ValueError):
            return "no earlier run in this workdir"
        return describe_changes(last, json.loads(json.dumps(self.parts, default=str)))


def describe_changes(old: dict, new: dict) -> str:
    """What differs between two stage inputs, in a few words."""
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if key == "data" and isinstance(a, dict) and isinstance(b, dict):
            ia, ib = a.get("images", {}), b.get("images", {})

            def images(keys):  # an image and its mirror count once
                return len({original_id(k) for k in keys})
            changed = images(k for k in ia if k in ib and ia[k] != ib[k])
            added, removed = images(set(ib) - set(ia)), images(set(ia) - set(ib))
            bits = [f"{n} {what}" for n, what in ((changed, "changed"), (added, "added"),
                                                   (removed, "removed")) if n]
            if a.get("classes") != b.get("classes"):
                bits.append("class names")
            changes.append("training data: " + (", ".join(bits) or "changed") + " image(s)")
        elif isinstance(a, dict) and isinstance(b, dict):
            fields = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            changes.append(", ".join(f"{key}.{f}" for f in fields))
        else:
            changes.append(key)
    return "changed: " + "; ".join(changes) if changes else "checkpoint missing"
