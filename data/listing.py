"""What a data source holds, before any image is decoded: the classes and each split's samples.

A source is an ImageFolder tree (``data.tree``) or a label file (``data.labels``); both give a
``Listing``. A validation split carved from the training samples (``dataset.val_fraction`` or
``dataset.folds``, ``data.split``) is applied to the listing, so every source gets it alike. The
start-up summary of the classes stays one readable block at any number of classes.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import logging
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from data.names import printable, shortened
from data.split import Sample, Split, fold_split, fraction_split

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
LISTED_CLASSES = 24  # up to this many classes, the start-up summary names every one


@dataclass(frozen=True)
class Listing:
    """The classes (as the source spells them) and each split's ``(path, class index)`` samples."""

    classes: list[str]
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]
    base: Path  # the folder that split.csv writes sample paths relative to
    sources: dict[str, str] = field(default_factory=dict)  # split -> where its images come from
    split: Split | None = None  # the carved validation split, when there is one

    def counts(self, samples: Sequence[Sample]) -> list[int]:
        """Images per class in ``samples``."""
        counts = [0] * len(self.classes)
        for _, label in samples:
            counts[label] += 1
        return counts


def carve(listing: Listing, folds: int | None, fold: int, fraction: float | None, seed: int) -> Listing:
    """``listing`` with its validation split carved from its training samples, said in the log."""
    if folds is not None:
        split = fold_split(listing.train, folds, fold, seed)
        what = f"fold {fold} of {folds} (stratified)"
        short = "fewer images than folds, so some folds validate without them: "
        source = f"{listing.sources['train']}, fold {fold} of {folds} (split_seed {seed})"
    else:
        split = fraction_split(listing.train, fraction, seed)
        what = f"{fraction:g} of each class (stratified)"
        short = "a single image, which stays in training: "
        source = f"{listing.sources['train']}, a {fraction:g} split (split_seed {seed})"
    log.info(
        "Validation split carved from %s: %s, dataset.split_seed=%d: %d training and %d validation images",
        listing.sources["train"],
        what,
        seed,
        len(split.train),
        len(split.val),
    )
    if split.unsplit:
        names = ", ".join(printable(listing.classes[c]) for c in split.unsplit)
        log.warning("Class(es) with %s%s", short, names)
    return replace(
        listing, train=split.train, val=split.val, split=split, sources={**listing.sources, "valid": source}
    )


def copies(samples: Sequence[Sample], others: Sequence[Sample]) -> list[str]:
    """The files of ``samples`` whose bytes equal a file of ``others`` (the same file, a link, or a
    copy). Only files whose size matches one of ``others`` are read and hashed, each once."""
    sizes: dict[int, list[str]] = {}
    for path, _ in others:
        with contextlib.suppress(OSError):
            sizes.setdefault(os.path.getsize(path), []).append(path)
    digests: dict[str, str] = {}

    def digest(path: str) -> str | None:
        if path not in digests:
            try:
                with open(path, "rb") as f:
                    digests[path] = hashlib.file_digest(f, "sha256").hexdigest()
            except OSError:
                return None
        return digests[path]

    found = []
    for path, _ in samples:
        try:
            size = os.path.getsize(path)
        except OSError:
            continue
        mine = digest(path) if size in sizes else None
        if mine is not None and any(digest(other) == mine for other in sizes[size]):
            found.append(path)
    return found


def warn_of_copies(listing: Listing) -> None:
    """Say, with a count, when held-out test images are byte-identical to training or validation
    images: their score is then partly a score on images the run saw."""
    if not listing.test or not (listing.train or listing.val):
        return
    found = copies(listing.test, [*listing.train, *listing.val])
    if found:
        log.warning(
            "%d of the %d test images are byte-identical to training or validation images (e.g. %s): "
            "the held-out score counts them as unseen although the run saw them. Remove the copies "
            "from the test split.",
            len(found),
            len(listing.test),
            printable(found[0]),
        )


def class_summary(names: Sequence[str], columns: dict[str, list[int]]) -> str:
    """The images per class of each split, as one block: every class up to LISTED_CLASSES classes,
    else the spread and the smallest and largest classes (classes.csv in the run folder has all)."""
    train = columns.get("train") or next(iter(columns.values()))
    heads = "/".join(columns)
    if len(names) <= LISTED_CLASSES:
        width = min(24, max(len(shortened(n, 24)) for n in names))
        rows = [
            f"  {shortened(n, 24):<{width}} " + "/".join(str(col[i]) for col in columns.values())
            for i, n in enumerate(names)
        ]
        return f"images per class, {heads}:\n" + "\n".join(rows)
    order = sorted(range(len(names)), key=lambda i: train[i])

    def few(indices: Sequence[int]) -> str:
        return ", ".join(f"{shortened(names[i], 24)} {train[i]}" for i in indices)

    return (
        f"{len(names)} classes; training images per class: min {min(train)}, median "
        f"{statistics.median(train):g}, max {max(train)} (ratio {max(train) / max(1, min(train)):.3g})\n"
        f"  smallest: {few(order[:5])}\n  largest: {few(order[::-1][:5])}\n"
        f"  every class's {heads} counts: classes.csv in the run folder"
    )


def write_classes(path: Path, names: Sequence[str], columns: dict[str, list[int]]) -> None:
    """``classes.csv``: one row per class with its index, name and images per split."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "class", *columns])
        writer.writerows([i, name, *(col[i] for col in columns.values())] for i, name in enumerate(names))
    os.replace(tmp, path)
