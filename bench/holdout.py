"""A validation split held out of a VOC set's training split, for choosing a setting without the test split.

    python -m bench.holdout --data /work/shared/data/raccoon --out /tmp/raccoon_holdout --fraction 0.2 --seed 0 [--fold 1]

Writes ``<out>``: ``JPEGImages`` and ``Annotations`` linked to the set's own
(nothing copied), ``ImageSets/Main/<train>.txt`` and ``<val>.txt`` (a seeded
random ``fraction`` of ``--split``'s ids held out, the rest kept, each file in
the source's order) and a link to every other split file of the source. Train
with ``data.root=<out> data.train_split=train data.test_split=val`` and score
the candidates on ``val``; the test split is then read once, for the choice.
The split is recorded in ``<out>/holdout.json``.
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path

from detector.data.base import DatasetError
from detector.data.voc import read_split_ids
from detector.fileio import write_json_atomic, write_text_atomic


class HoldoutError(ValueError):
    """A source set or output this tool cannot use."""


def hold_out(ids: list[str], fraction: float, seed: int, fold: int = 0) -> tuple[list[str], list[str]]:
    """(kept, held out): round(fraction * len(ids)) ids, both in ``ids``' order.

    The held-out ids are fold ``fold`` of one permutation drawn with ``seed``: positions
    ``[fold * count, (fold + 1) * count)``, so the folds of one seed are disjoint (fold 0 is
    ``random.Random(seed).sample(range(n), count)``'s draw whenever that draw is a prefix of the
    full permutation's, as for raccoon's 160 ids at 0.2; a test checks it).
    """
    if not 0 < fraction < 1:
        raise HoldoutError(f"--fraction {fraction} must be in (0, 1)")
    count = round(fraction * len(ids))
    if count < 1 or count >= len(ids):
        raise HoldoutError(f"--fraction {fraction} of {len(ids)} images holds out {count}: none or all")
    folds = len(ids) // count
    if not 0 <= fold < folds:
        raise HoldoutError(f"--fold {fold}: {len(ids)} images hold {folds} disjoint folds of {count} (0-{folds - 1})")
    order = random.Random(seed).sample(range(len(ids)), len(ids))
    held = set(order[fold * count:(fold + 1) * count])
    return ([i for n, i in enumerate(ids) if n not in held], [i for n, i in enumerate(ids) if n in held])


def make_root(data: Path, out: Path, split: str, fraction: float, seed: int,
              train_name: str = "train", val_name: str = "val", fold: int = 0) -> dict:
    sets = data / "ImageSets" / "Main"
    try:
        ids = read_split_ids(data, split)  # the loader's reader: the same id checks
    except DatasetError as e:
        raise HoldoutError(str(e)) from e
    if not ids:
        raise HoldoutError(f"{sets / f'{split}.txt'}: the split lists no images")
    kept, held = hold_out(ids, fraction, seed, fold)
    if out.exists() and any(out.iterdir()):
        raise HoldoutError(f"{out}: exists and is not empty; give a new folder")
    subs = ("JPEGImages", "Annotations")
    for sub in subs:  # checked before anything is written
        if not (data / sub).is_dir():
            raise HoldoutError(f"{data / sub}: missing; --data must be a VOC-layout root")
    (out / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    for sub in subs:
        (out / sub).symlink_to((data / sub).resolve())
    for other in sorted(sets.glob("*.txt")):
        if other.stem not in (train_name, val_name):
            (out / "ImageSets" / "Main" / other.name).symlink_to(other.resolve())
    write_text_atomic(out / "ImageSets" / "Main" / f"{train_name}.txt", "".join(i + "\n" for i in kept))
    write_text_atomic(out / "ImageSets" / "Main" / f"{val_name}.txt", "".join(i + "\n" for i in held))
    record = {"source": str(data.resolve()), "split": split, "fraction": fraction, "seed": seed, "fold": fold,
              train_name: len(kept), val_name: len(held), f"{val_name}_ids": held}
    write_json_atomic(out / "holdout.json", record)
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a VOC-layout root")
    parser.add_argument("--out", type=Path, required=True, help="a new folder for the linked root")
    parser.add_argument("--split", default="trainval", help="the split to divide (default trainval)")
    parser.add_argument("--fraction", type=float, default=0.2, help="share held out as val (default 0.2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fold", type=int, default=0,
                        help="which fraction-sized block of the seed's permutation to hold out (default 0); "
                             "the folds of one seed are disjoint")
    args = parser.parse_args(argv)
    try:
        record = make_root(args.data, args.out, args.split, args.fraction, args.seed, fold=args.fold)
    except HoldoutError as e:
        parser.exit(2, f"error: {e}\n")
    print(f"{args.out}: train {record['train']} images, val {record['val']} (from {args.split}, seed {args.seed}, fold {args.fold})")


if __name__ == "__main__":
    main()
