"""A validation split carved from one tree: a stratified fraction, or fold i of a stratified K-fold.

Each class's images are ordered by path and shuffled with ``dataset.split_seed``, so the split
depends only on the file names and the seed: the same tree gives the same split in a resumed run
and in evaluate.py. With ``val_fraction``, each class gives round(fraction x n) images to
validation, at least one and never all of them, so that a class of two images is on both sides;
a class of one image cannot be split and stays in training (said). With ``folds=K``, each
class's shuffled images are dealt into K parts of sizes that differ by one at most; fold i
validates on part i of every class, so the K validation sets partition the tree and each holds
every class in proportion, within one image.

A run records its split (the checkpoint's fingerprint of the validation set, and ``split.csv``);
``RecordedSplit.check`` refuses to evaluate a run on a split carved otherwise since (images added,
removed or renamed), naming what changed.
"""

from __future__ import annotations

import csv
import hashlib
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import UserError

Sample = tuple[str, int]  # (path, class index)


@dataclass(frozen=True)
class Split:
    """Which samples train and which validate, and what could not be split."""

    train: list[Sample]
    val: list[Sample]
    unsplit: list[int]  # classes with too few images to give one to each side

    def record(self) -> dict[str, int | str]:
        """What a checkpoint keeps of the split (``config["split"]``): a resume on images that
        split otherwise is refused, naming it."""
        return {"validation_images": len(self.val), "validation_set": self.digest()}

    def digest(self) -> str:
        """A short fingerprint of the validation set: equal digests, equal sets."""
        text = "\n".join(sorted(path for path, _ in self.val))
        return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def shuffled_by_class(samples: Sequence[Sample], seed: int) -> dict[int, list[Sample]]:
    """Each class's samples in path order, shuffled with ``seed`` (per class, so adding an image
    to one class does not move the others)."""
    by_class: dict[int, list[Sample]] = {}
    for sample in sorted(samples):
        by_class.setdefault(sample[1], []).append(sample)
    for label, items in by_class.items():
        random.Random(f"{seed}:{label}").shuffle(items)
    return by_class


def fraction_split(samples: Sequence[Sample], fraction: float, seed: int) -> Split:
    """``fraction`` of each class to validation: at least one image, never all of them."""
    train, val, unsplit = [], [], []
    for label, items in sorted(shuffled_by_class(samples, seed).items()):
        if len(items) < 2:
            train += items
            unsplit.append(label)
            continue
        n_val = min(len(items) - 1, max(1, round(fraction * len(items))))
        val += items[:n_val]
        train += items[n_val:]
    return Split(sorted(train), sorted(val), unsplit)


def fold_split(samples: Sequence[Sample], folds: int, fold: int, seed: int) -> Split:
    """Fold ``fold`` of a stratified ``folds``-fold partition: its part of every class validates.
    A class of fewer than ``folds`` images is missing from some folds' validation (one image:
    it always trains)."""
    train, val, unsplit = [], [], []
    for label, items in sorted(shuffled_by_class(samples, seed).items()):
        if len(items) < folds:
            unsplit.append(label)
        if len(items) < 2:
            train += items
            continue
        parts = [items[i::folds] for i in range(folds)]  # sizes differ by one at most
        val += parts[fold]
        train += [s for i, part in enumerate(parts) if i != fold for s in part]
    return Split(sorted(train), sorted(val), unsplit)


def write_split(path: Path, split: Split, classes: Sequence[str], tree: Path) -> None:
    """``split.csv``: one row per image, ``path,class,split`` (paths relative to the split's tree),
    written whole or not at all."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8", errors="surrogateescape") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "class", "split"])
        for part, samples in (("train", split.train), ("valid", split.val)):
            writer.writerows((os.path.relpath(p, tree), classes[label], part) for p, label in samples)
    os.replace(tmp, path)


@dataclass(frozen=True)
class RecordedSplit:
    """What a run recorded of its carved split: the checkpoint's ``config["split"]`` (its
    validation set's fingerprint) and the run's ``split.csv`` (every image and its side), if kept."""

    record: dict[str, Any]
    csv: Path | None = None

    def recorded_validation(self, tree: Path) -> set[str] | None:
        """The absolute paths split.csv lists as validating, or None without a readable file."""
        if self.csv is None:
            return None
        try:
            with open(self.csv, newline="", encoding="utf-8", errors="surrogateescape") as f:
                return {
                    os.path.normpath(tree / row["path"])
                    for row in csv.DictReader(f)
                    if row["split"] == "valid"
                }
        except (OSError, KeyError, csv.Error):
            return None

    def check(self, split: Split, tree: Path) -> None:
        """UserError, naming what changed, unless ``split`` validates on the recorded images."""
        recorded = self.record.get("validation_set")
        if recorded is None or split.digest() == recorded:
            return
        now = {os.path.normpath(path) for path, _ in split.val}
        before = self.recorded_validation(tree)
        if before is None:
            changed = f"its split.csv is not at hand to say which ({self.csv or 'no run folder'})"
        else:
            gone, new = sorted(before - now), sorted(now - before)
            changed = (
                f"{len(gone)} recorded validation image(s) no longer validate{examples(gone, tree)}, "
                f"{len(new)} image(s) validate now that did not{examples(new, tree)}"
            )
        raise UserError(
            f"The validation images carved from {tree} today are not the ones the run validated on "
            f"(it recorded {self.record.get('validation_images')} images, fingerprint {recorded}; now "
            f"{len(split.val)}, fingerprint {split.digest()}): images were added, removed or renamed "
            f"since, so a carved split moves and would mix the run's training images into its "
            f"validation. {changed}. Restore the tree as it was trained on, or train a new run on "
            f"today's images."
        )


def examples(paths: Sequence[str], tree: Path, shown: int = 3) -> str:
    if not paths:
        return ""
    names = ", ".join(os.path.relpath(p, tree) for p in paths[:shown])
    return f" (e.g. {names})"
