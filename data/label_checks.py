"""What can be wrong with a label file's rows, said or refused: bad rows counted with examples
(``dataset.on_bad_row``) and a file of mostly bad rows refused, an integer label far above the
others (a typo), labels that mix integers and names or differ only in case, and a class without
images in a split. ``data.labels`` reads the rows; this module judges them.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from common.errors import UserError
from data.names import printable

if TYPE_CHECKING:
    from data.settings import LabelFileSettings

log = logging.getLogger("data.labels")  # the messages keep the name users know


EXAMPLES = 3  # bad rows quoted per kind


@dataclass(frozen=True)
class Row:
    """One good row: the image file, its label as written, and its split."""

    line: int
    path: str
    label: str
    split: str


@dataclass
class BadRows:
    """Rows passed over, by kind, with the first few quoted."""

    file: Path
    counts: Counter
    examples: dict[str, list[str]]

    def add(self, kind: str, line: int, text: str) -> None:
        self.counts[kind] += 1
        if len(self.examples.setdefault(kind, [])) < EXAMPLES:
            self.examples[kind].append(f"line {line}: {text}")

    def describe(self) -> str:
        return "; ".join(
            f"{kind} {n} ({', '.join(self.examples[kind])}{', ...' if n > EXAMPLES else ''})"
            for kind, n in self.counts.most_common()
        )


def warn_about_labels(rows: list[Row], settings: LabelFileSettings) -> None:
    """Say once what is probably a mistake in the labels named classes are made of: integers mixed
    with names (then every label is a name, sorted as text), and names that differ only in case."""
    if settings.class_names:
        return
    labels = sorted({row.label for row in rows})
    numbers = [label for label in labels if label.isdigit()]
    if numbers and len(numbers) < len(labels):
        log.warning(
            "The labels mix integers (%s) and names (%s): every label is then a class name, sorted as "
            "text. If the integers are class numbers, give dataset.class_names in their order.",
            ", ".join(numbers[:5]),
            ", ".join(printable(label) for label in labels if not label.isdigit())[:200],
        )
    by_case: dict[str, list[str]] = {}
    for label in labels:
        by_case.setdefault(label.casefold(), []).append(label)
    twins = [group for group in by_case.values() if len(group) > 1]
    if twins:
        log.warning(
            "Labels that differ only in case are separate classes: %s. If each group is one class, "
            "write its label one way in the file.",
            "; ".join(" / ".join(printable(label) for label in group) for group in twins[:5]),
        )


def refuse_outlying_labels(rows: list[Row], settings: LabelFileSettings, file: Path) -> None:
    """Integer labels number the classes from ``first_label`` to the largest label: one far above
    the others (a typo such as 20000000 among 0 to 2) would make a class of every number up to it.
    Refused naming its rows, before any class is built. Far: beyond twice the number of distinct
    labels plus 10 classes."""
    labels = {row.label for row in rows}
    if settings.class_names or not labels or not all(label.isdigit() for label in labels):
        return
    values = sorted({int(label) for label in labels})
    limit = settings.first_label + 2 * len(values) + 10
    far = [row for row in rows if int(row.label) >= limit]
    if not far:
        return
    usual = [v for v in values if v < limit]
    others = f"{usual[0]} to {usual[-1]}" if usual else "none"
    quoted = ", ".join(f"line {row.line}: {printable(row.label)}" for row in far[:EXAMPLES])
    raise UserError(
        f"{printable(str(file))}: {len(far)} row(s) carry an integer label far above the others "
        f"({quoted}{', ...' if len(far) > EXAMPLES else ''}; the other rows use {others}). Integer "
        f"labels number the classes from dataset.first_label={settings.first_label} to the largest "
        f"label, so this would make a class of every number up to it. Correct the row(s), or name "
        f"the classes with dataset.class_names (labels outside them are then counted as unknown)."
    )


def refuse_bad_rows(bad: BadRows, total: int, policy: str) -> None:
    """Mostly bad rows are a setting to fix, refused; otherwise skip (said) or refuse by ``policy``."""
    n = sum(bad.counts.values())
    if not n:
        return
    where = printable(str(bad.file))
    if n > total / 2:
        check = (
            "dataset.labels, dataset.val_labels and dataset.test_labels must list different images"
            if bad.counts.most_common(1)[0][0] == "listed twice"
            else "check dataset.root, dataset.image_dir, dataset.path_format, the columns "
            "(dataset.path_column, dataset.label_column) and dataset.delimiter"
        )
        raise UserError(
            f"{where}: {n} of {total} rows cannot be used ({bad.describe()}). So many point at a "
            f"setting rather than the data: {check}."
        )
    if policy == "error":
        raise UserError(
            f"{where}: {n} of {total} rows cannot be used ({bad.describe()}). Fix them, or set "
            f"dataset.on_bad_row=skip to train without them (counted in the log)."
        )
    log.warning(
        "%s: %d of %d rows skipped: %s. dataset.on_bad_row=error refuses such rows instead.",
        where,
        n,
        total,
        bad.describe(),
    )


def check_splits(
    parts: dict[str, list[tuple[str, int]]], classes: list[str], settings: LabelFileSettings, sources: dict
) -> None:
    """Every class has images in every split the files give; a validation split is given or carved."""
    if len(classes) < 2:
        raise UserError(
            f"{printable(settings.labels)} lists {len(classes)} class(es) "
            f"({', '.join(map(printable, classes))}); a classifier needs at least two. "
            f"Is dataset.label_column={settings.label_column!r} the labels?"
        )
    if settings.carved and parts["valid"]:
        raise UserError(
            f"The label files give {len(parts['valid'])} validation images and dataset.val_fraction/folds "
            f"would carve another validation split: use one. To carve from all, map the split to "
            f"training: dataset.split_values.valid=train (or drop dataset.val_labels)."
        )
    if not settings.carved and not parts["valid"]:
        raise UserError(
            f"{printable(settings.labels)} gives no validation images: carve them with "
            f"dataset.val_fraction=0.2 (or dataset.folds=5 dataset.fold=0), or give a split column "
            f"(dataset.split_column), a pattern (dataset.split_pattern) or dataset.val_labels."
        )
    if not parts["train"]:
        raise UserError(f"{printable(settings.labels)} gives no training images (dataset.split_values).")
    for split, samples in parts.items():
        if not samples:
            continue
        present = {label for _, label in samples}
        empty = [printable(c) for i, c in enumerate(classes) if i not in present]
        if empty:
            named = ", ".join(empty[:10]) + (f" and {len(empty) - 10} more" if len(empty) > 10 else "")
            raise UserError(
                f"Class(es) {named} have no {split} images in "
                f"{sources.get(split, settings.labels)}. Every class needs images in each split: "
                f"add rows, or leave the class out of "
                f"dataset.class_names (integer labels: classes run from dataset.first_label="
                f"{settings.first_label} to the largest label)."
            )
