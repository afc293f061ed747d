"""The one small interface every dataset implements.

A dataset is a sequence of :class:`~detector.records.ImageRecord` plus the
names of its classes: ``labels`` in the records index ``class_names``. The
number of classes always comes from here (or the config), never a literal.
Loaders parse everything at construction, so indexing is a list lookup and
errors in the annotations surface at once, naming the file.
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Iterator, Sequence

from ..records import ImageRecord


class DatasetError(ValueError):
    """Bad dataset input; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


# How many problems one error message lists (the rest are counted).
MAX_REPORTED = 20


def format_problems(problems: Sequence[str], what: str) -> str:
    """"<N> <what>:" and one problem per indented line, at most :data:`MAX_REPORTED`."""
    shown = "\n  ".join(problems[:MAX_REPORTED])
    more = f"\n  ... and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else ""
    return f"{len(problems)} {what}:\n  {shown}{more}"


class Dataset(ABC):
    """Annotated images, indexable and sized.

    Attributes:
        class_names: the classes, in label order (label ``i`` is ``class_names[i]``).
        name: a short stable name of the data (e.g. ``"VOC2007"``), used with
            ``split`` to key caches and name outputs.
        split: the image set, e.g. ``"trainval"`` or ``"test"``.
    """

    class_names: tuple[str, ...]
    name: str
    split: str

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __getitem__(self, index: int) -> ImageRecord: ...

    def __iter__(self) -> Iterator[ImageRecord]:
        for i in range(len(self)):
            yield self[i]

    @property
    def num_classes(self) -> int:
        """Number of object classes (no background class)."""
        return len(self.class_names)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, "
                f"images={len(self)}, classes={len(self.class_names)})")


class InMemoryDataset(Dataset):
    """A dataset over a list of records already in memory (what the loaders build)."""

    def __init__(self, records: Sequence[ImageRecord], class_names: Sequence[str],
                 name: str, split: str):
        self.class_names = tuple(class_names)
        self.name = name
        self.split = split
        self._records = list(records)
        n = len(self.class_names)
        for r in self._records:
            if len(r.labels) and (r.labels.min() < 0 or r.labels.max() >= n):
                raise DatasetError(r.path, f"label out of range for {n} classes")

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> ImageRecord:
        return self._records[index]
